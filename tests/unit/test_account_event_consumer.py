"""The balance-event consumer on fakes: apply, gap and reconnect catch-up, retry on failure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from bank.v1 import account_pb2, common_pb2, events_pb2

from services.account.adapters.fakes import FakeOutboxReader, FakeSubscription
from services.account.domain import LedgerEntry, RecentTransactions
from services.account.entrypoints.event_consumer import BalanceEventConsumer
from services.account.service_layer.balance_event_sync import BalanceEventSync
from services.account.service_layer.balance_events import BalanceEventApplier
from services.account.service_layer.cache_layout import (
    RecentTransactionsCodec,
    balance_key,
    recent_key,
)
from services.account.service_layer.dependencies import CacheTtls
from shared.cache import AppliedVersions, CacheEntry, CircuitBreaker, VersionedCache, decode_entry
from shared.cache.fake_backend import InMemoryCacheBackend
from shared.events import channel_name, partition_of

PARTITIONS = 4


@dataclass
class Rig:
    consumer: BalanceEventConsumer
    subscription: FakeSubscription
    outbox: FakeOutboxReader
    backend: InMemoryCacheBackend
    cache: VersionedCache
    versions: AppliedVersions


def payload(account_id: str, version: int, minor: int, sequence: int = 0) -> bytes:
    event = events_pb2.BalanceChanged(
        account_id=account_id, version=version,
        balance=common_pb2.Money(minor_units=minor, currency="EUR"),
        partition_sequence=sequence,
    )
    return event.SerializeToString()


def channel_of(account_id: str) -> str:
    return channel_name(partition_of(account_id, PARTITIONS))


def account_in(partition: int) -> str:
    while True:
        candidate = str(uuid.uuid4())
        if partition_of(candidate, PARTITIONS) == partition:
            return candidate


async def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


def entry(rig: Rig, key: str) -> CacheEntry | None:
    raw = rig.backend.raw(key)
    return decode_entry(raw) if raw is not None else None


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    backend = InMemoryCacheBackend()
    cache = VersionedCache(backend, CircuitBreaker(2, 0.05), 0.1)
    subscription = FakeSubscription()
    outbox = FakeOutboxReader()
    versions = AppliedVersions()
    sync = BalanceEventSync(
        applier=BalanceEventApplier(cache, CacheTtls(60, 120, 300, 0.1)),
        outbox=outbox, partitions=PARTITIONS, catch_up_window_s=200, max_backoff_s=0.05,
        applied_versions=versions,
    )
    consumer = BalanceEventConsumer(new_subscription=lambda: subscription, sync=sync,
                                    partitions=PARTITIONS, max_backoff_s=0.05)
    await consumer.start()
    await consumer.wait_subscribed(2.0)
    try:
        yield Rig(consumer, subscription, outbox, backend, cache, versions)
    finally:
        await consumer.stop()


async def fill(rig: Rig, account_id: str, version: int, minor: int) -> None:
    await rig.cache.put_if_newer("balance", balance_key(account_id),
                                 CacheEntry(version, "owner-1", b"EUR|%d" % minor), 60_000)
    await rig.cache.put_if_newer("recent", recent_key(account_id),
                                 CacheEntry(version, "owner-1", b"[]"), 60_000)


async def test_an_event_updates_the_balance_and_tombstones_the_list(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill(rig, account, 3, 100)
    rig.subscription.deliver(channel_of(account), payload(account, 4, 250, sequence=1))
    await eventually(lambda: (entry(rig, balance_key(account)) or CacheEntry(0, "", b"")).version
                     == 4)
    assert entry(rig, balance_key(account)) == CacheEntry(4, "owner-1", b"EUR|250")
    assert entry(rig, recent_key(account)) == CacheEntry(4, "", b"", tombstone=True)


async def test_an_older_event_never_moves_an_entry_back(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill(rig, account, 9, 900)
    rig.subscription.deliver(channel_of(account), payload(account, 8, 800, sequence=1))
    rig.subscription.deliver(channel_of(account), payload(account, 10, 1000, sequence=2))
    await eventually(lambda: entry(rig, balance_key(account)) ==
                     CacheEntry(10, "owner-1", b"EUR|1000"))


async def test_a_sequence_gap_catches_up_from_the_outbox(rig: Rig) -> None:
    lost = account_in(1)
    seen = account_in(1)
    await fill(rig, lost, 1, 10)
    queries = rig.outbox.queries
    rig.subscription.deliver(channel_name(1), payload(seen, 2, 20, sequence=7))
    await eventually(lambda: rig.outbox.queries == queries)  # first event: no baseline, no gap
    rig.outbox.rows.append((1, payload(lost, 2, 55)))  # its message (sequence 8) was lost
    rig.subscription.deliver(channel_name(1), payload(seen, 3, 30, sequence=9))
    await eventually(lambda: entry(rig, balance_key(lost)) == CacheEntry(2, "owner-1", b"EUR|55"))
    assert rig.outbox.queries == queries + 1


async def test_a_reconnect_catches_up_from_the_outbox(rig: Rig) -> None:
    account = account_in(2)
    await fill(rig, account, 1, 10)
    rig.outbox.rows.append((2, payload(account, 5, 500)))  # published while we were away
    opened = rig.subscription.opened
    rig.subscription.drop()
    await eventually(lambda: entry(rig, balance_key(account)) ==
                     CacheEntry(5, "owner-1", b"EUR|500"))
    assert rig.subscription.opened == opened + 1


async def test_a_failed_apply_is_retried_until_it_lands(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill(rig, account, 1, 10)
    rig.backend.down = True
    rig.subscription.deliver(channel_of(account), payload(account, 2, 20, sequence=1))
    await asyncio.sleep(0.2)  # several failed attempts, breaker open in between
    assert entry(rig, balance_key(account)) == CacheEntry(1, "owner-1", b"EUR|10")
    rig.backend.down = False
    await eventually(lambda: entry(rig, balance_key(account)) ==
                     CacheEntry(2, "owner-1", b"EUR|20"))


async def test_a_failed_catch_up_query_is_retried(rig: Rig) -> None:
    account = account_in(3)
    await fill(rig, account, 1, 10)
    rig.outbox.rows.append((3, payload(account, 4, 40)))
    rig.outbox.fail = True
    rig.subscription.drop()
    await eventually(lambda: rig.outbox.queries >= 3)
    rig.outbox.fail = False
    await eventually(lambda: entry(rig, balance_key(account)) ==
                     CacheEntry(4, "owner-1", b"EUR|40"))


async def test_stop_then_start_catches_up_what_was_missed(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill(rig, account, 1, 10)
    await rig.consumer.stop()
    rig.outbox.rows.append((partition_of(account, PARTITIONS), payload(account, 3, 33)))
    await rig.consumer.start()
    await eventually(lambda: entry(rig, balance_key(account)) ==
                     CacheEntry(3, "owner-1", b"EUR|33"))


async def test_garbage_on_a_channel_triggers_a_catch_up(rig: Rig) -> None:
    queries = rig.outbox.queries
    rig.subscription.deliver(channel_name(0), b"\xff\xff\xff")
    await eventually(lambda: rig.outbox.queries > queries)


async def test_an_applied_event_wakes_the_readers_waiting_for_its_version(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill(rig, account, 3, 100)
    assert rig.versions.live  # every partition subscribed
    waiter = asyncio.create_task(rig.versions.wait_for(account, 4, timeout_s=2))
    await eventually(lambda: rig.versions.waiting(account) == 1)
    rig.subscription.deliver(channel_of(account), payload(account, 4, 250, sequence=1))
    assert await waiter
    # By the time the reader wakes, the cache already holds that version.
    assert entry(rig, balance_key(account)) == CacheEntry(4, "owner-1", b"EUR|250")


async def test_a_caught_up_event_wakes_waiters_too_and_waits_stop_while_unsubscribed(
    rig: Rig,
) -> None:
    account = account_in(2)
    await fill(rig, account, 1, 10)
    rig.outbox.rows.append((2, payload(account, 5, 500)))  # published while we were away
    await rig.consumer.stop()
    assert not rig.versions.live  # a reader would wait for an event nobody delivers
    await rig.consumer.start()
    assert await rig.versions.wait_for(account, 5, timeout_s=2)  # from the outbox catch-up
    assert rig.versions.live


# The recent-transactions list: an event inserts its ledger entry onto the list at exactly the
# previous version, and tombstones it otherwise.


def ledger(n: int) -> LedgerEntry:
    """Entry n of an account: id n, at second n, balance after 10 * n."""
    return LedgerEntry(n, f"t{n}", 10, 10 * n, "cp", f"entry {n}", n * 1_000_000)


def payload_with_entry(account_id: str, version: int, sequence: int = 0) -> bytes:
    """The event of version n carries ledger entry n."""
    event = events_pb2.BalanceChanged.FromString(payload(account_id, version, 10 * version,
                                                         sequence))
    event.entry.CopyFrom(account_pb2.LedgerEntry(
        entry_id=version, account_id=account_id, transfer_id=f"t{version}",
        amount=common_pb2.Money(minor_units=10, currency="EUR"),
        balance_after=common_pb2.Money(minor_units=10 * version, currency="EUR"),
        counterparty_account_id="cp", description=f"entry {version}",
    ))
    event.entry.created_at.FromMicroseconds(version * 1_000_000)
    return event.SerializeToString()


async def fill_recent(rig: Rig, account_id: str, version: int, newest: int) -> None:
    """The list cached at `version`, holding entries newest, newest - 1, ... 1 (at most 10)."""
    entries = tuple(ledger(n) for n in range(newest, max(newest - 10, 0), -1))
    value = RecentTransactions(account_id, "owner-1", "EUR", version, entries)
    await rig.cache.put_if_newer("recent", recent_key(account_id),
                                 RecentTransactionsCodec(account_id).to_entry(value), 60_000)


def recent(rig: Rig, account_id: str) -> RecentTransactions | None:
    cached = entry(rig, recent_key(account_id))
    if cached is None or cached.tombstone:
        return None
    return RecentTransactionsCodec(account_id).from_entry(cached)


async def test_an_event_one_version_ahead_inserts_its_entry_and_keeps_ten(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill_recent(rig, account, 11, newest=11)  # ten entries, 11..2
    rig.subscription.deliver(channel_of(account), payload_with_entry(account, 12, sequence=1))
    await eventually(lambda: rig.versions.reached(account, 12))
    listed = recent(rig, account)
    assert listed is not None and listed.version == 12
    assert listed.entries == tuple(ledger(n) for n in range(12, 2, -1))


async def test_an_event_after_a_gap_tombstones_the_list(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill_recent(rig, account, 3, newest=3)
    rig.subscription.deliver(channel_of(account), payload_with_entry(account, 5, sequence=1))
    await eventually(lambda: rig.versions.reached(account, 5))
    assert entry(rig, recent_key(account)) == CacheEntry(5, "", b"", tombstone=True)


async def test_a_duplicate_event_changes_nothing(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill_recent(rig, account, 3, newest=3)
    event = payload_with_entry(account, 4, sequence=1)
    rig.subscription.deliver(channel_of(account), event)
    await eventually(lambda: rig.versions.reached(account, 4))
    once = rig.backend.raw(recent_key(account))
    rig.subscription.deliver(channel_of(account), event)
    rig.subscription.deliver(channel_of(account), payload_with_entry(account, 4, sequence=2))
    await asyncio.sleep(0.05)  # both deliveries applied (they are no-ops)
    assert rig.backend.raw(recent_key(account)) == once
    listed = recent(rig, account)
    assert listed is not None and [e.entry_id for e in listed.entries] == [4, 3, 2, 1]


async def test_a_catch_up_replays_an_accounts_missed_events_in_order(rig: Rig) -> None:
    account = account_in(2)
    await fill_recent(rig, account, 3, newest=3)
    await rig.consumer.stop()
    for version in (5, 4, 6):  # any order in the outbox
        rig.outbox.rows.append((2, payload_with_entry(account, version)))
    await rig.consumer.start()
    assert await rig.versions.wait_for(account, 6, timeout_s=2)
    listed = recent(rig, account)
    assert listed is not None and listed.version == 6
    assert [e.entry_id for e in listed.entries] == [6, 5, 4, 3, 2, 1]
    assert entry(rig, balance_key(account)) == CacheEntry(6, "", b"", tombstone=True)  # unfilled


async def test_an_event_without_its_entry_tombstones_the_list(rig: Rig) -> None:
    account = str(uuid.uuid4())
    await fill_recent(rig, account, 3, newest=3)
    rig.subscription.deliver(channel_of(account), payload(account, 4, 40, sequence=1))
    await eventually(lambda: rig.versions.reached(account, 4))
    assert entry(rig, recent_key(account)) == CacheEntry(4, "", b"", tombstone=True)
