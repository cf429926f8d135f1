"""The one page-token format (shared/page_tokens.py): opaque, bound to its list and its scope,
MAC'd with a server key, and INVALID_ARGUMENT for anything this API did not hand out."""

from __future__ import annotations

import base64
import hashlib
import struct
import time

import grpc
import pytest

from shared.config import Settings
from shared.errors import InvalidArgument
from shared.page_tokens import MIN_POSITION_US, PageTokens, page_token_key

KEY = bytes(range(32))
TOKENS = PageTokens("test.list", "qq", KEY)
NOW_US = int(time.time() * 1_000_000)


def test_a_token_round_trips_its_position() -> None:
    token = TOKENS.encode("scope-1", 1_700_000_000_123_456, 987)
    assert TOKENS.decode(token, "scope-1") == (1_700_000_000_123_456, 987)
    assert "=" not in token and "1700000000123456" not in token


@pytest.mark.parametrize("bad", ["", "not-base64!", "A" * 200, "QUFB"])
def test_malformed_tokens_are_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.decode(bad, "scope-1")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in refused.value.message


def test_an_edited_token_is_refused() -> None:
    token = TOKENS.encode("scope-1", NOW_US, 6)
    for position in range(len(token) - 1):  # the last character also holds padding bits
        edited = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1:]
        with pytest.raises(InvalidArgument):
            TOKENS.decode(edited, "scope-1")


def test_a_token_is_bound_to_its_scope_its_list_and_the_key() -> None:
    token = TOKENS.encode("scope-1", NOW_US, 6)
    with pytest.raises(InvalidArgument):
        TOKENS.decode(token, "scope-2")
    with pytest.raises(InvalidArgument):
        PageTokens("other.list", "qq", KEY).decode(token, "scope-1")
    with pytest.raises(InvalidArgument):
        PageTokens("test.list", "qq", bytes(32)).decode(token, "scope-1")


def test_a_client_cannot_forge_a_token_with_the_unkeyed_checksum() -> None:
    """What a client could compute before the MAC was keyed: the format is public, the key not."""
    body = struct.pack(">Bqq", 1, NOW_US, 1)
    checksum = hashlib.blake2b(body + b"scope-1", digest_size=8, person=b"test.list").digest()
    forged = base64.urlsafe_b64encode(body + checksum).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.decode(forged, "scope-1")
    assert "page_token" in refused.value.message


@pytest.mark.parametrize("position", [
    (-1, 5), (0, 5), (MIN_POSITION_US - 1, 5),  # before any row of this system
    (NOW_US + 2 * 86_400 * 1_000_000, 5),  # days in the future
    (2**63 - 1, 5),
    (NOW_US, -7),  # a negative id
])
def test_positions_out_of_range_are_refused_even_with_a_valid_mac(
    position: tuple[int, int],
) -> None:
    token = TOKENS.encode("scope-1", *position)
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.decode(token, "scope-1")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in refused.value.message and "range" in refused.value.message


def test_the_key_is_derived_from_the_signing_key_and_required() -> None:
    settings = Settings(database_url="postgresql://x", redis_nodes="127.0.0.1:1",
                        session_signing_key="s" * 32)
    key = page_token_key(settings)
    assert len(key) == 32 and key != page_token_key(
        Settings(database_url="postgresql://x", redis_nodes="127.0.0.1:1",
                 session_signing_key="t" * 32))
    assert b"s" * 32 not in key
    with pytest.raises(ValueError, match="BANK_SESSION_SIGNING_KEY"):
        page_token_key(Settings(database_url="postgresql://x", redis_nodes="127.0.0.1:1"))
