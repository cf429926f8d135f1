"""Cache-aside reads: serve a fresh enough entry, otherwise load PostgreSQL once and fill.

A miss goes through two guards before it reaches the database:
1. in-process coalescing: one load per key at a time in this process;
2. a short Redis lease (SET NX PX, in the same script that re-checks the entry): one load per key
   across replicas. A replica that loses the lease polls for the winner's fill for a moment, then
   loads the database itself rather than fail or wait on a loader that may have died.
Every fill is a compare-and-set that only writes a newer version (see `scripts.py`).

An entry older than the caller's `min_version` (a read right after the caller's own transfer) is
usually an event away from being current: with `wait_key`, the read waits a few ms for the event
consumer to apply that version (`applied_versions.py`), reads the entry again, and counts a
`hit_after_wait`; otherwise, or on timeout, it loads PostgreSQL (`bypass`). It never returns a
version below `min_version`.

With `entity`, the newest version of that entity the event consumer has applied in this process
is a floor too: an entry below it lost an event's write (a failover), and is read through.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from shared.cache.applied_versions import AppliedVersions
from shared.cache.backend import LeaseOutcome
from shared.cache.coalescer import SingleFlight
from shared.cache.entry import CacheEntry, decode_entry
from shared.cache.ttl import jittered_ttl_ms
from shared.cache.versioned_cache import CacheUnavailable, VersionedCache
from shared.metrics import CACHE_REQUESTS

T = TypeVar("T")
log = logging.getLogger(__name__)


class EntryCodec(Protocol[T]):
    def to_entry(self, value: T) -> CacheEntry: ...

    def from_entry(self, entry: CacheEntry) -> T: ...

    def version_of(self, value: T) -> int: ...


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    value: T | None  # None: the loader found nothing (never cached)
    from_cache: bool


@dataclass(frozen=True)
class LeaseTuning:
    lease_ms: int = 1000  # how long a loader may hold the lease (it is released by the fill)
    wait_s: float = 0.25  # how long a replica that lost the lease polls for the fill
    poll_s: float = 0.01


class _RequestCounters:
    """Label children resolved once per kind: the hit path should not hash labels per call."""

    def __init__(self, kind: str) -> None:
        self.hit = CACHE_REQUESTS.labels(kind, "hit")
        self.miss = CACHE_REQUESTS.labels(kind, "miss")
        self.bypass = CACHE_REQUESTS.labels(kind, "bypass")
        self.fallback = CACHE_REQUESTS.labels(kind, "fallback")
        self.lease_wait_expired = CACHE_REQUESTS.labels(kind, "lease_wait_expired")
        # A cached entry older than min_version, and the event that brought it up to date was
        # applied during the wait: served from the cache, one extra Redis GET.
        self.hit_after_wait = CACHE_REQUESTS.labels(kind, "hit_after_wait")
        # The event did not come within the wait (counted besides the read's `bypass`).
        self.version_wait_expired = CACHE_REQUESTS.labels(kind, "version_wait_expired")


class ReadThroughCache:
    def __init__(
        self,
        cache: VersionedCache | None,
        *,
        ttl_jitter: float,
        lease: LeaseTuning | None = None,
        applied_versions: AppliedVersions | None = None,
        version_wait_s: float = 0.0,
    ) -> None:
        """`cache=None` disables caching: every read loads (the benchmark's "cache off").
        `applied_versions` and `version_wait_s` > 0 enable the wait for an in-flight event."""
        self._cache = cache
        self._applied = applied_versions
        self._versions = applied_versions if version_wait_s > 0 else None
        self._version_wait_s = version_wait_s
        self._jitter = ttl_jitter
        self._lease = lease or LeaseTuning()
        self._flights: SingleFlight[str, tuple[Any, bool]] = SingleFlight()
        self._counters: dict[str, _RequestCounters] = {}
        self._token_prefix = os.urandom(6).hex()
        self._token_counter = itertools.count()

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def prefetch(self, key: str) -> None:
        """Send the lookup of `key` ahead; this call's `read` of it takes the reply."""
        if self._cache is not None:
            self._cache.prefetch(key)

    async def peek(self, keys: Sequence[str]) -> list[CacheEntry | None] | None:
        """The entries at these keys as they are, read together (the pipelined client sends the
        GETs of one tick in one write per master), without a lease and not counted as reads;
        None when the cache is off or Redis cannot answer."""
        cache = self._cache
        if cache is None:
            return None
        found = await asyncio.gather(*(cache.lookup(key) for key in keys),
                                     return_exceptions=True)
        entries: list[CacheEntry | None] = []
        for entry in found:
            if isinstance(entry, BaseException):
                if isinstance(entry, CacheUnavailable):
                    return None
                raise entry
            entries.append(entry)
        return entries

    async def fill(self, kind: str, key: str, value: T, *, codec: EntryCodec[T],
                   ttl_s: float) -> bool:
        """Write a value read from the source of truth ahead of any read (a warm-up), through
        the same compare-and-set as a read's fill: a newer entry, or a tombstone above its
        version, keeps it out. False when it was not written or Redis cannot answer."""
        if self._cache is None:
            return False
        try:
            return await self._cache.put_if_newer(
                kind, key, codec.to_entry(value), jittered_ttl_ms(ttl_s, self._jitter))
        except CacheUnavailable:
            return False

    def _count(self, kind: str) -> _RequestCounters:
        counters = self._counters.get(kind)
        if counters is None:
            counters = self._counters[kind] = _RequestCounters(kind)
        return counters

    async def read(
        self,
        kind: str,
        key: str,
        *,
        ttl_s: float,
        codec: EntryCodec[T],
        load: Callable[[], Awaitable[T | None]],
        min_version: int = 0,
        entity: str | None = None,
        wait_key: str | None = None,
        read_through: bool = False,
        cacheable: Callable[[T], bool] | None = None,
    ) -> Read[T]:
        """`entity`: the entity whose events update this entry (the account id); no entry below
        a version of it applied here is served. `wait_key`: the same, for the kinds an event
        brings up to date in place (the balance; not a list it tombstones): a read that needs a
        newer version waits a moment for the event. `read_through`: the caller cannot say which
        version it needs (its read-your-writes floor is unknown): load, and fill.
        `cacheable`: a loaded value is written to the cache only if this holds for it (the
        caller owns the account: an entry carries its owner, and a caller refused afterwards
        must not have put someone else's owner id into Redis). The value is returned either
        way; a coalesced read that joined this load gets it uncached, and fills next time."""
        cache = self._cache
        if cache is None:
            return Read(await load(), False)
        counters = self._count(kind)
        if read_through:
            counters.bypass.inc()
            loaded = await self._load_and_fill(cache, kind, key, ttl_s, codec, load, cacheable)
            return Read(loaded, False)
        if entity is not None and self._applied is not None:
            min_version = max(min_version, self._applied.newest(entity))
        try:
            entry = await cache.lookup(key)
        except CacheUnavailable:
            counters.fallback.inc()
        else:
            if entry is not None and not entry.tombstone:
                if entry.version >= min_version:
                    value = _readable(codec, key, entry)
                    if value is not None:
                        counters.hit.inc()
                        return Read(value, True)
                    counters.miss.inc()
                else:
                    if wait_key is not None and self._versions is not None:
                        newer = await self._wait_for_event(cache, counters, key, wait_key,
                                                           min_version)
                        waited = None if newer is None else _readable(codec, key, newer)
                        if waited is not None:
                            counters.hit_after_wait.inc()
                            return Read(waited, True)
                    counters.bypass.inc()
            else:
                counters.miss.inc()
        result, _ = await self._flights.run(
            key, lambda: self._load_once(cache, kind, key, ttl_s, codec, load, min_version,
                                         cacheable)
        )
        value, from_cache = cast(tuple[T | None, bool], result)
        if value is not None and codec.version_of(value) < min_version:
            # Joined a load that started before the version asked for was committed.
            again = await self._load_once(
                cache, kind, key, ttl_s, codec, load, min_version, cacheable
            )
            value, from_cache = again
        return Read(value, from_cache)

    async def _wait_for_event(
        self, cache: VersionedCache, counters: _RequestCounters, key: str, wait_key: str,
        min_version: int,
    ) -> CacheEntry | None:
        """The entry at `min_version` or newer once the consumer applied it, else None."""
        versions = self._versions
        assert versions is not None
        # With the subscription down no event can come: waiting would only delay the load. (The
        # circuit is closed here: the lookup that found the older entry has just succeeded.)
        if not versions.live:
            return None
        if not await versions.wait_for(wait_key, min_version, self._version_wait_s):
            counters.version_wait_expired.inc()
            return None
        try:
            entry = await cache.lookup(key)
        except CacheUnavailable:
            return None
        if entry is None or entry.tombstone or entry.version < min_version:
            return None  # evicted, expired or tombstoned since: load it
        return entry

    async def _load_once(
        self,
        cache: VersionedCache,
        kind: str,
        key: str,
        ttl_s: float,
        codec: EntryCodec[T],
        load: Callable[[], Awaitable[T | None]],
        min_version: int,
        cacheable: Callable[[T], bool] | None = None,
    ) -> tuple[T | None, bool]:
        lease_key = key + ":lease"
        token = f"{self._token_prefix}:{next(self._token_counter)}"
        holds_lease = False
        try:
            probe = await cache.probe_or_lease(
                key, lease_key, min_version, token, self._lease.lease_ms
            )
        except CacheUnavailable:
            probe = None  # load without a lease; the fill will most likely fail too
        if probe is not None:
            if probe.outcome is LeaseOutcome.CACHED and probe.raw_entry is not None:
                entry = decode_entry(probe.raw_entry)
                cached = None if entry is None else _readable(codec, key, entry)
                if cached is not None:
                    return cached, True
            elif probe.outcome is LeaseOutcome.ACQUIRED:
                holds_lease = True
            else:
                filled = await self._wait_for_fill(cache, key, min_version)
                readable = None if filled is None else _readable(codec, key, filled)
                if readable is not None:
                    return readable, True
                self._count(kind).lease_wait_expired.inc()
        try:
            value = await load()
        except BaseException:
            if holds_lease:
                await self._release(cache, lease_key, token)
            raise
        if value is None or (cacheable is not None and not cacheable(value)):
            if holds_lease:
                await self._release(cache, lease_key, token)
            return value, False
        ttl_ms = jittered_ttl_ms(ttl_s, self._jitter)
        try:
            await cache.put_if_newer(
                kind, key, codec.to_entry(value), ttl_ms, lease_key=lease_key,
                token=token if holds_lease else "",
            )
        except CacheUnavailable:
            pass  # served from PostgreSQL; the next read fills
        return value, False

    async def _load_and_fill(
        self, cache: VersionedCache, kind: str, key: str, ttl_s: float, codec: EntryCodec[T],
        load: Callable[[], Awaitable[T | None]],
        cacheable: Callable[[T], bool] | None = None,
    ) -> T | None:
        value = await load()
        if value is not None and (cacheable is None or cacheable(value)):
            try:
                await cache.put_if_newer(kind, key, codec.to_entry(value),
                                         jittered_ttl_ms(ttl_s, self._jitter))
            except CacheUnavailable:
                pass
        return value

    async def _wait_for_fill(
        self, cache: VersionedCache, key: str, min_version: int
    ) -> CacheEntry | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lease.wait_s
        while loop.time() < deadline:
            await asyncio.sleep(self._lease.poll_s)
            try:
                entry = await cache.lookup(key)
            except CacheUnavailable:
                return None
            if entry is not None and not entry.tombstone and entry.version >= min_version:
                return entry
        return None

    @staticmethod
    async def _release(cache: VersionedCache, lease_key: str, token: str) -> None:
        try:
            await cache.release_lease(lease_key, token)
        except CacheUnavailable:
            pass  # it expires after lease_ms


__all__ = ["EntryCodec", "LeaseTuning", "Read", "ReadThroughCache"]


def _readable(codec: EntryCodec[T], key: str, entry: CacheEntry) -> T | None:
    """An entry this release cannot decode (another release's format, corruption) is a miss,
    never an error: PostgreSQL answers, and the next newer version replaces the entry."""
    try:
        return codec.from_entry(entry)
    except Exception:
        log.warning("unreadable cache entry %s at version %d; reading through", key,
                    entry.version)
        return None
