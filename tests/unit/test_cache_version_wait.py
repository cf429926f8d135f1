"""Waiting for an in-flight event instead of loading the database: `AppliedVersions` alone, then
`ReadThroughCache` with it (a hit after the wait, the timeout that reads through, and the cases
where waiting is pointless: the subscription is down, the circuit is not closed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from shared.cache import (
    AppliedVersions,
    CircuitBreaker,
    CircuitState,
    KeyUpdate,
    ReadThroughCache,
    UpdateMode,
    VersionedCache,
)
from shared.cache.fake_backend import InMemoryCacheBackend
from tests.support.cache_rows import Database, Row, RowCodec

ACCOUNT = "a1"
KEY = "account:{a1}:balance"


@dataclass
class Rig:
    reads: ReadThroughCache
    cache: VersionedCache
    backend: InMemoryCacheBackend
    versions: AppliedVersions
    db: Database

    async def read(self, min_version: int) -> tuple[Row, bool]:
        result = await self.reads.read("balance", KEY, ttl_s=60, codec=RowCodec(),
                                       load=self.db.load, min_version=min_version,
                                       wait_key=ACCOUNT)
        assert result.value is not None
        assert result.value.version >= min_version  # never below what was asked for
        return result.value, result.from_cache

    async def event(self, version: int, amount: int) -> None:
        """What the consumer does: the compare-and-set, then the record readers wait on."""
        self.db.row = Row("u1", version, amount)
        await self.cache.apply_version(
            version, [KeyUpdate("balance", KEY, UpdateMode.SET_DATA, 60_000, b"%d" % amount)])
        self.versions.record(ACCOUNT, version)


@pytest.fixture
async def rig() -> Rig:
    backend = InMemoryCacheBackend()
    cache = VersionedCache(backend, CircuitBreaker(3, 60.0), 0.05)
    versions = AppliedVersions()
    versions.live = True
    reads = ReadThroughCache(cache, ttl_jitter=0.1, applied_versions=versions,
                             version_wait_s=0.5)
    rig = Rig(reads, cache, backend, versions, Database(Row("u1", 1, 100)))
    assert await rig.read(0) == (Row("u1", 1, 100), False)  # cached at v1
    return rig


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("bank_cache_requests_total",
                                     {"kind": "balance", "result": result}) or 0.0


async def waiting_on(versions: AppliedVersions, entity: str) -> None:
    async with asyncio.timeout(2):
        while not versions.waiting(entity):
            await asyncio.sleep(0.001)


async def test_a_waiter_wakes_on_the_version_it_asked_for_not_before() -> None:
    versions = AppliedVersions()
    waiter = asyncio.create_task(versions.wait_for("x", 3, timeout_s=2))
    await waiting_on(versions, "x")
    versions.record("x", 2)
    versions.record("y", 9)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    versions.record("x", 4)
    assert await waiter
    assert versions.waiting("x") == 0


async def test_a_wait_times_out_and_leaves_nothing_behind() -> None:
    versions = AppliedVersions()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await versions.wait_for("x", 1, timeout_s=0.02)
    assert loop.time() - started >= 0.02
    assert versions.waiting("x") == 0


async def test_a_version_applied_before_the_wait_answers_at_once_within_the_memory() -> None:
    versions = AppliedVersions(remembered=2)
    versions.record("x", 5)
    versions.record("x", 3)  # an older replay does not move it back
    assert await versions.wait_for("x", 5, timeout_s=0)
    versions.record("y", 1)
    versions.record("z", 1)  # "x" is the oldest of three: forgotten
    assert not versions.reached("x", 5)
    assert versions.reached("z", 1)


async def test_an_event_applied_during_the_wait_is_a_cache_hit_with_the_new_version(
    rig: Rig,
) -> None:
    hits_after_wait, bypasses = counted("hit_after_wait"), counted("bypass")
    reader = asyncio.create_task(rig.read(2))  # right after its own transfer committed v2
    await waiting_on(rig.versions, ACCOUNT)
    await rig.event(2, 150)
    assert await reader == (Row("u1", 2, 150), True)
    assert rig.db.loads == 1  # only the first fill
    assert counted("hit_after_wait") == hits_after_wait + 1
    assert counted("bypass") == bypasses


async def test_an_older_event_during_the_wait_keeps_it_waiting(rig: Rig) -> None:
    reader = asyncio.create_task(rig.read(3))
    await waiting_on(rig.versions, ACCOUNT)
    await rig.event(2, 150)
    await asyncio.sleep(0.01)
    assert not reader.done()
    await rig.event(3, 175)
    assert await reader == (Row("u1", 3, 175), True)
    assert rig.db.loads == 1


async def test_no_event_within_the_wait_reads_through(rig: Rig) -> None:
    rig.reads = ReadThroughCache(rig.cache, ttl_jitter=0.1, applied_versions=rig.versions,
                                 version_wait_s=0.03)
    rig.db.row = Row("u1", 2, 150)  # committed; its event is lost or late
    expired, bypasses = counted("version_wait_expired"), counted("bypass")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await rig.read(2) == (Row("u1", 2, 150), False)
    assert loop.time() - started >= 0.03
    assert rig.db.loads == 2
    assert counted("version_wait_expired") == expired + 1
    assert counted("bypass") == bypasses + 1
    assert await rig.read(2) == (Row("u1", 2, 150), True)  # the read-through filled v2


async def test_an_entry_gone_by_the_time_the_event_lands_is_loaded(rig: Rig) -> None:
    reader = asyncio.create_task(rig.read(2))
    await waiting_on(rig.versions, ACCOUNT)
    rig.db.row = Row("u1", 2, 150)
    await rig.backend.delete(KEY)  # evicted (LRU) while the event was in flight
    rig.versions.record(ACCOUNT, 2)
    assert await reader == (Row("u1", 2, 150), False)
    assert rig.db.loads == 2


@pytest.mark.parametrize("why", ["subscription_down", "wait_disabled"])
async def test_no_wait_when_no_event_can_help(rig: Rig, why: str) -> None:
    if why == "subscription_down":
        rig.versions.live = False
    else:
        rig.reads = ReadThroughCache(rig.cache, ttl_jitter=0.1, applied_versions=rig.versions,
                                     version_wait_s=0.0)
    rig.db.row = Row("u1", 2, 150)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await rig.read(2) == (Row("u1", 2, 150), False)
    assert loop.time() - started < 0.25  # not the 0.5 s wait
    assert rig.versions.waiting(ACCOUNT) == 0


async def test_redis_failing_skips_the_wait_and_reads_through(rig: Rig) -> None:
    rig.backend.down = True
    rig.db.row = Row("u1", 2, 150)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await rig.read(2) == (Row("u1", 2, 150), False)
    assert loop.time() - started < 0.25
    for _ in range(3):
        await rig.read(2)
    assert rig.cache.breaker.state is CircuitState.OPEN


async def test_an_entry_an_applied_event_has_passed_is_never_served(rig: Rig) -> None:
    """The consumer applied v2, then a failover lost that write: the new primary still holds
    v1. A reader that asks for nothing in particular must not get v1 (it knows v2 exists)."""
    rig.db.row = Row("u1", 2, 150)
    rig.versions.record(ACCOUNT, 2)  # applied here; the entry below it stands for the lost write
    result = await rig.reads.read("balance", KEY, ttl_s=60, codec=RowCodec(), load=rig.db.load,
                                  entity=ACCOUNT)
    assert (result.value, result.from_cache) == (Row("u1", 2, 150), False)
    # The read-through put v2 back: the next read is a hit again.
    result = await rig.reads.read("balance", KEY, ttl_s=60, codec=RowCodec(), load=rig.db.load,
                                  entity=ACCOUNT)
    assert (result.value, result.from_cache) == (Row("u1", 2, 150), True)
