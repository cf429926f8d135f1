"""The warm-up after a login on fakes: one load for every account, nothing when all is cached,
only what is missing, and never over a newer entry."""

from __future__ import annotations

import uuid

from services.account.adapters.fakes import FakeAccountReader
from services.account.domain import AccountDetails, LedgerEntry
from services.account.service_layer import balances
from services.account.service_layer.cache_layout import accounts_key, balance_key, recent_key
from services.account.service_layer.dependencies import AccountReads, CacheTtls
from services.account.service_layer.pagination import transaction_page_tokens
from services.account.service_layer.warm_up import warm_caller_cache
from shared.auth_context import Caller
from shared.cache import (
    CircuitBreaker,
    ReadThroughCache,
    VersionedCache,
    decode_entry,
    encode_tombstone,
    encode_value,
)
from shared.cache.fake_backend import InMemoryCacheBackend

ALICE = Caller(str(uuid.uuid4()), str(uuid.uuid4()))
TOKENS = transaction_page_tokens(bytes(range(32)))


def new_id() -> str:
    return str(uuid.uuid4())


def world(accounts: int = 2) -> tuple[AccountReads, FakeAccountReader, InMemoryCacheBackend,
                                      list[str]]:
    reader = FakeAccountReader()
    ids = sorted(new_id() for _ in range(accounts))
    for account_id in ids:
        reader.add_account(AccountDetails(account_id, ALICE.user_id, "Current", "EUR", 0, 1,
                                          "open", 1))
        reader.post(account_id, LedgerEntry(1, new_id(), 700, 700, new_id(), "in", 2))
    backend = InMemoryCacheBackend()
    cache = VersionedCache(backend, CircuitBreaker(3, 1.0), 0.1)
    reads = AccountReads(reader, ReadThroughCache(cache, ttl_jitter=0.1),
                         CacheTtls(60, 120, 300, 0.1), TOKENS)
    return reads, reader, backend, ids


async def test_a_cold_user_is_warmed_with_one_load_and_reads_hit() -> None:
    reads, reader, _, ids = world()
    done = await warm_caller_cache(reads, ALICE)
    assert (done.accounts, done.loaded, done.filled) == (2, True, 4)
    assert reader.loads == {"snapshots": 1}
    for account_id in ids:
        assert (await balances.get_balance(reads, ALICE, account_id)).from_cache
        assert (await balances.list_recent_transactions(reads, ALICE, account_id)).from_cache
    assert reader.loads == {"snapshots": 1}


async def test_a_warm_user_costs_no_load() -> None:
    reads, reader, _, _ = world()
    await warm_caller_cache(reads, ALICE)
    again = await warm_caller_cache(reads, ALICE)
    assert (again.loaded, again.filled) == (False, 0)
    assert reader.loads == {"snapshots": 1}


async def test_only_missing_or_tombstoned_entries_are_filled() -> None:
    reads, reader, backend, ids = world()
    await warm_caller_cache(reads, ALICE)
    await backend.delete(recent_key(ids[0]))
    # A tombstone at the version PostgreSQL has (an event that found nothing to update).
    await backend.delete(balance_key(ids[1]))
    await backend.put_if_newer(balance_key(ids[1]), "l", 2, encode_tombstone(2), 60_000, "")
    done = await warm_caller_cache(reads, ALICE)
    assert (done.loaded, done.filled) == (True, 2)
    assert reader.loads == {"snapshots": 2}


async def test_a_warm_up_never_overwrites_a_newer_entry() -> None:
    reads, _, backend, ids = world(accounts=1)
    # An event brought the cache to version 5 while PostgreSQL (this fake) still says 2.
    newer = encode_value(5, ALICE.user_id, b"EUR|9999")
    await backend.put_if_newer(balance_key(ids[0]), "l", 5, newer, 60_000, "")
    await backend.put_if_newer(recent_key(ids[0]), "l", 5, encode_tombstone(5), 60_000, "")
    done = await warm_caller_cache(reads, ALICE)
    assert (done.loaded, done.filled) == (True, 0)
    entry = decode_entry(backend.raw(balance_key(ids[0])) or b"")
    assert entry is not None and (entry.version, entry.data) == (5, b"EUR|9999")
    assert backend.raw(accounts_key(ALICE.user_id)) is not None


async def test_without_the_cache_nothing_is_loaded() -> None:
    reads, reader, _, _ = world()
    off = AccountReads(reader, ReadThroughCache(None, ttl_jitter=0.1), reads.ttls,
                       reads.page_tokens)
    assert (await warm_caller_cache(off, ALICE)).loaded is False
    assert reader.loads == {}
