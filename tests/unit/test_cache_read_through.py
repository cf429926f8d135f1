"""Cache-aside reads on the in-memory backend: hits, misses, min_version, the stale-fill race,
stampedes, leases across replicas, and Redis faults (errors, slowness, the breaker)."""

from __future__ import annotations

import asyncio

import pytest

from shared.cache import (
    CacheEntry,
    CircuitBreaker,
    CircuitState,
    KeyUpdate,
    ReadThroughCache,
    UpdateMode,
    VersionedCache,
    decode_entry,
)
from shared.cache.backend import WriteOutcome
from shared.cache.fake_backend import InMemoryCacheBackend
from shared.cache.read_through import LeaseTuning
from tests.support.cache_rows import Database, Row, RowCodec

KEY = "account:{a1}:balance"


def build(
    backend: InMemoryCacheBackend | None = None,
    *,
    threshold: int = 3,
    reset_s: float = 60.0,
    timeout_s: float = 0.05,
    lease: LeaseTuning | None = None,
) -> tuple[ReadThroughCache, VersionedCache, InMemoryCacheBackend]:
    backend = backend or InMemoryCacheBackend()
    cache = VersionedCache(backend, CircuitBreaker(threshold, reset_s), timeout_s)
    return ReadThroughCache(cache, ttl_jitter=0.1, lease=lease), cache, backend


async def read(rt: ReadThroughCache, db: Database, min_version: int = 0) -> tuple[Row, bool]:
    result = await rt.read("balance", KEY, ttl_s=60, codec=RowCodec(), load=db.load,
                           min_version=min_version)
    assert result.value is not None
    return result.value, result.from_cache


async def test_miss_fills_then_hits() -> None:
    rt, _, backend = build()
    db = Database()
    assert await read(rt, db) == (Row("u1", 1, 100), False)
    assert await read(rt, db) == (Row("u1", 1, 100), True)
    assert db.loads == 1
    assert decode_entry(backend.raw(KEY) or b"") == CacheEntry(1, "u1", b"100")


async def test_min_version_bypasses_an_older_entry_and_refills() -> None:
    rt, _, backend = build()
    db = Database()
    await read(rt, db)
    db.row = Row("u1", 2, 150)
    assert await read(rt, db) == (Row("u1", 1, 100), True)  # no event yet: cached v1
    assert await read(rt, db, min_version=2) == (Row("u1", 2, 150), False)
    assert await read(rt, db, min_version=2) == (Row("u1", 2, 150), True)


async def test_a_fill_read_before_a_newer_event_is_rejected() -> None:
    """The classic race: read v1, the transfer commits v2 and its event lands, the v1 fill comes
    last and must lose."""
    rt, cache, backend = build()
    db = Database()
    db.gate = asyncio.Event()
    reader = asyncio.create_task(read(rt, db))
    while db.loads == 0:
        await asyncio.sleep(0)
    db.row = Row("u1", 2, 150)  # the transfer commits...
    outcomes = await cache.apply_version(2, [KeyUpdate("balance", KEY, UpdateMode.SET_DATA,
                                                       60_000, b"150")])
    assert outcomes == [WriteOutcome.TOMBSTONED]  # nothing cached yet: the data has no owner
    db.gate.set()
    assert await reader == (Row("u1", 1, 100), False)  # that reader saw v1, fine for it
    assert decode_entry(backend.raw(KEY) or b"") == CacheEntry(2, "", b"", tombstone=True)
    db.gate = None
    assert await read(rt, db) == (Row("u1", 2, 150), False)
    assert await read(rt, db) == (Row("u1", 2, 150), True)


async def test_events_update_a_cached_value_in_place_and_only_forwards() -> None:
    rt, cache, _ = build()
    db = Database()
    await read(rt, db)
    update = [KeyUpdate("balance", KEY, UpdateMode.SET_DATA, 60_000, b"175")]
    assert await cache.apply_version(3, update) == [WriteOutcome.UPDATED]
    assert await cache.apply_version(2, update) == [WriteOutcome.STALE]
    assert await cache.apply_version(3, update) == [WriteOutcome.STALE]
    assert await read(rt, db) == (Row("u1", 3, 175), True)
    assert db.loads == 1


async def test_stampede_of_cold_reads_loads_once() -> None:
    rt, _, _ = build()
    db = Database()
    db.delay_s = 0.02
    results = await asyncio.gather(*(read(rt, db) for _ in range(400)))
    assert db.loads == 1
    assert {row for row, _ in results} == {Row("u1", 1, 100)}


async def test_a_replica_that_loses_the_lease_waits_for_the_winners_fill() -> None:
    shared_backend = InMemoryCacheBackend()
    first, _, _ = build(shared_backend, lease=LeaseTuning(lease_ms=1000, wait_s=1.0))
    second, _, _ = build(shared_backend, lease=LeaseTuning(lease_ms=1000, wait_s=1.0))
    db = Database()
    db.delay_s = 0.05
    results = await asyncio.gather(*(read(first, db) for _ in range(50)),
                                   *(read(second, db) for _ in range(50)))
    assert db.loads == 1
    assert {row for row, _ in results} == {Row("u1", 1, 100)}


async def test_a_replica_reads_the_database_when_the_lease_holder_never_fills() -> None:
    backend = InMemoryCacheBackend()
    await backend.get_or_lease(KEY, KEY + ":lease", 0, "dead-replica", 10_000)
    rt, _, _ = build(backend, lease=LeaseTuning(lease_ms=1000, wait_s=0.05, poll_s=0.01))
    db = Database()
    assert await read(rt, db) == (Row("u1", 1, 100), False)
    assert db.loads == 1


async def test_not_found_is_not_cached_and_releases_the_lease() -> None:
    rt, _, backend = build()

    async def nothing() -> Row | None:
        return None

    result = await rt.read("balance", KEY, ttl_s=60, codec=RowCodec(), load=nothing)
    assert result.value is None
    assert backend.raw(KEY) is None and backend.raw(KEY + ":lease") is None


async def test_redis_down_serves_the_database_and_the_breaker_stops_calling() -> None:
    rt, cache, backend = build(threshold=3, reset_s=60)
    backend.down = True
    db = Database()
    for _ in range(10):
        assert await read(rt, db) == (Row("u1", 1, 100), False)
    assert cache.breaker.state is CircuitState.OPEN
    assert backend.calls == 3  # after that, no more calls to a dead Redis
    assert db.loads == 10


async def test_breaker_recovers_by_itself() -> None:
    rt, cache, backend = build(threshold=1, reset_s=0.05)
    backend.down = True
    db = Database()
    await read(rt, db)
    assert cache.breaker.state is CircuitState.OPEN
    backend.down = False
    await asyncio.sleep(0.06)
    assert await read(rt, db) == (Row("u1", 1, 100), False)  # probe succeeds, then fill
    assert cache.breaker.state is CircuitState.CLOSED
    assert await read(rt, db) == (Row("u1", 1, 100), True)


async def test_a_slow_redis_times_out_to_the_database() -> None:
    rt, _, backend = build(timeout_s=0.02)
    backend.latency_s = 0.5
    db = Database()
    started = asyncio.get_running_loop().time()
    assert await read(rt, db) == (Row("u1", 1, 100), False)
    assert asyncio.get_running_loop().time() - started < 0.3


async def test_disabled_cache_always_loads() -> None:
    rt = ReadThroughCache(None, ttl_jitter=0.1)
    db = Database()
    for _ in range(3):
        assert await read(rt, db) == (Row("u1", 1, 100), False)
    assert db.loads == 3
    assert not rt.enabled


async def test_tombstone_accepts_a_fill_at_its_own_version_but_not_below() -> None:
    _, cache, backend = build()
    await cache.apply_version(5, [KeyUpdate("recent", KEY, UpdateMode.TOMBSTONE, 60_000)])
    assert not await cache.put_if_newer("recent", KEY, CacheEntry(4, "u1", b"x"), 60_000)
    assert await cache.put_if_newer("recent", KEY, CacheEntry(5, "u1", b"y"), 60_000)
    assert not await cache.put_if_newer("recent", KEY, CacheEntry(5, "u1", b"z"), 60_000)
    assert decode_entry(backend.raw(KEY) or b"") == CacheEntry(5, "u1", b"y")


async def test_tombstones_can_expire_before_values() -> None:
    now = [0.0]
    backend = InMemoryCacheBackend(clock=lambda: now[0])
    _, cache, _ = build(backend)
    other = "account:{a2}:balance"
    await cache.put_if_newer("balance", KEY, CacheEntry(1, "u1", b"1"), 60_000)
    updates = [KeyUpdate("balance", k, UpdateMode.SET_DATA, 60_000, b"2", tombstone_ttl_ms=5_000)
               for k in (KEY, other)]
    assert await cache.apply_version(2, updates) == [WriteOutcome.UPDATED,
                                                     WriteOutcome.TOMBSTONED]
    now[0] = 5.001
    assert await cache.lookup(other) is None
    assert await cache.lookup(KEY) == CacheEntry(2, "u1", b"2")


@pytest.mark.parametrize("version", [0, 1])
async def test_expired_entries_are_misses(version: int) -> None:
    now = [0.0]
    backend = InMemoryCacheBackend(clock=lambda: now[0])
    _, cache, _ = build(backend)
    await cache.put_if_newer("balance", KEY, CacheEntry(version, "u1", b"1"), 1000)
    assert await cache.lookup(KEY) is not None
    now[0] = 1.001
    assert await cache.lookup(KEY) is None


async def test_an_unreadable_entry_is_a_miss_not_an_error() -> None:
    """An entry another release wrote in another format (or a corrupted one) must not fail
    reads: the database answers instead."""
    reads, cache, _ = build()
    db = Database()
    db.row = Row("u1", 3, 300)
    assert await cache.put_if_newer("balance", KEY, CacheEntry(3, "u1", b"not-a-number"), 60_000)
    read = await reads.read("balance", KEY, ttl_s=60, codec=RowCodec(), load=db.load)
    assert read.value == Row("u1", 3, 300)
    assert not read.from_cache
    assert db.loads == 1


async def test_a_prefetch_never_takes_the_probe_that_would_close_the_circuit() -> None:
    rt, cache, backend = build(threshold=1, reset_s=0.05)
    backend.down = True
    db = Database()
    await read(rt, db)
    assert cache.breaker.state is CircuitState.OPEN
    backend.down = False
    await asyncio.sleep(0.06)
    rt.prefetch(KEY)  # skipped while the circuit is not closed
    assert cache.breaker.state is CircuitState.OPEN
    assert await read(rt, db) == (Row("u1", 1, 100), False)  # the read itself probes
    assert cache.breaker.state is CircuitState.CLOSED


async def test_a_prefetched_lookup_is_read_once() -> None:
    rt, _, backend = build()
    db = Database()
    await read(rt, db)  # fills
    calls = backend.calls
    rt.prefetch(KEY)
    assert await read(rt, db) == (Row("u1", 1, 100), True)
    assert backend.calls == calls + 1  # the prefetched GET answered the read
