"""The versioned entry format and TTL jitter."""

from __future__ import annotations

import pytest

from shared.cache import CacheEntry, decode_entry, encode_tombstone, encode_value
from shared.cache.ordered_list import (
    OrderedItem,
    decode_ordered_list,
    encode_insertion,
    encode_ordered_list,
)
from shared.cache.ttl import jittered_ttl_ms


def test_value_round_trips_with_binary_data() -> None:
    raw = encode_value(42, "user-1", b"EUR|12|\x00\xff")
    assert raw.startswith(b"42|v|user-1|")
    assert decode_entry(raw) == CacheEntry(42, "user-1", b"EUR|12|\x00\xff")


def test_tombstone_round_trips() -> None:
    assert decode_entry(encode_tombstone(7)) == CacheEntry(7, "", b"", tombstone=True)


@pytest.mark.parametrize("raw", [b"", b"garbage", b"x|v|o|d", b"3|q|o|d", b"3|v|o"])
def test_anything_else_is_not_an_entry(raw: bytes) -> None:
    assert decode_entry(raw) is None


def test_owner_with_separator_and_negative_versions_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_value(1, "a|b", b"")
    with pytest.raises(ValueError):
        encode_value(-1, "a", b"")
    with pytest.raises(ValueError):
        encode_tombstone(-1)


def test_jitter_stays_within_ten_percent() -> None:
    assert jittered_ttl_ms(60, 0.1, uniform=lambda: 0.0) == 54_000
    assert jittered_ttl_ms(60, 0.1, uniform=lambda: 1.0) == 66_000
    assert jittered_ttl_ms(60, 0.1, uniform=lambda: 0.5) == 60_000
    samples = {jittered_ttl_ms(60, 0.1) for _ in range(200)}
    assert all(54_000 <= s <= 66_000 for s in samples)
    assert len(samples) > 100  # actually spread, not one value


def test_tiny_ttls_never_reach_zero() -> None:
    assert jittered_ttl_ms(0.0001, 0.1, uniform=lambda: 0.0) == 1


def test_an_ordered_list_round_trips_and_refuses_what_its_framing_cannot_carry() -> None:
    items = [OrderedItem(20, 2, b'["a,b",1]'), OrderedItem(10, 1, b"")]
    data = encode_ordered_list(b"EUR", items)
    assert decode_ordered_list(data) == (b"EUR", items)
    assert decode_ordered_list(encode_ordered_list(b"EUR", [])) == (b"EUR", [])
    assert decode_ordered_list(b'{"c":"EUR","e":[]}') == (b'{"c":"EUR","e":[]}', [])
    assert decode_ordered_list(b"EUR\nnot-a-row") is None
    with pytest.raises(ValueError):
        encode_ordered_list(b"EUR", [OrderedItem(1, 1, b"two\nlines")])
    with pytest.raises(ValueError):
        encode_insertion(b"EUR", OrderedItem(-1, 1, b""))


def test_a_recent_list_in_the_older_json_format_still_reads() -> None:
    from services.account.domain import LedgerEntry
    from services.account.service_layer.cache_layout import RecentTransactionsCodec

    legacy = b'{"c":"EUR","e":[[7,"t",-5,95,"cp","d",123]]}'
    value = RecentTransactionsCodec("acc").from_entry(CacheEntry(3, "owner", legacy))
    assert value.entries == (LedgerEntry(7, "t", -5, 95, "cp", "d", 123),)
    again = RecentTransactionsCodec("acc").from_entry(
        RecentTransactionsCodec("acc").to_entry(value))
    assert again == value
