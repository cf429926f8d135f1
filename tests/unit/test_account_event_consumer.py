"""The balance-event consumer on fakes: apply, gap and reconnect catch-up, retry on failure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from bank.v1 import common_pb2, events_pb2

from services.account.adapters.cache_layout import balance_key, recent_key
from services.account.adapters.fakes import FakeOutboxReader, FakeSubscription
from services.account.entrypoints.event_consumer import BalanceEventConsumer
from services.account.service_layer.balance_events import BalanceEventApplier
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
    consumer = BalanceEventConsumer(
        new_subscription=lambda: subscription,
        applier=BalanceEventApplier(cache, CacheTtls(60, 120, 300, 0.1)),
        outbox=outbox, partitions=PARTITIONS, catch_up_window_s=200, max_backoff_s=0.05,
        applied_versions=versions,
    )
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
