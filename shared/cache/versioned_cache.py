"""Every cache call goes through here: a short timeout, the circuit breaker and the write metrics.
Any Redis error, timeout or open circuit becomes `CacheUnavailable`, which callers answer by
reading PostgreSQL: the cache makes requests faster, never fails them."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.cache.backend import CacheBackend, LeaseProbe, RawKeyUpdate, WriteOutcome
from shared.cache.circuit_breaker import CircuitBreaker, CircuitState
from shared.cache.entry import CacheEntry, decode_entry, encode_value
from shared.metrics import CACHE_WRITES

log = logging.getLogger(__name__)
T = TypeVar("T")


# Replies of reads sent ahead (`prefetch`), per call: each gRPC call runs in its own task, hence
# its own copy of the context.
_prefetched: ContextVar[dict[str, Awaitable[Any]] | None] = ContextVar("prefetched", default=None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class CacheUnavailable(Exception):
    """Redis failed, was too slow, or the circuit is open: use the source of truth."""


class UpdateMode(enum.Enum):
    SET_DATA = b"u"  # keep the cached owner, take the new data (a tombstone if nothing is cached)
    TOMBSTONE = b"t"  # the data cannot be derived from the event: reject fills below the version
    # Insert the item of `data` (shared.cache.ordered_list) into a list cached at exactly the
    # previous version, keeping its newest `keep` items; from any other state, a tombstone.
    INSERT = b"i"


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    kind: str  # metrics label: balance, recent, api
    key: str
    mode: UpdateMode
    ttl_ms: int
    data: bytes = b""
    # A tombstone only has to outlive the fills that were in flight when it was written, and
    # tombstones are written for every changed account, read or not: they can live shorter
    # than values and take less of Redis's memory (0: the value TTL).
    tombstone_ttl_ms: int = 0
    keep: int = 0  # INSERT: how many items the list keeps


_OUTCOME_LABEL = {
    WriteOutcome.STALE: "stale_rejected",
    WriteOutcome.UPDATED: "written",
    WriteOutcome.TOMBSTONED: "tombstoned",
}


class VersionedCache:
    def __init__(
        self,
        backend: CacheBackend,
        breaker: CircuitBreaker,
        timeout_s: float | None,
    ) -> None:
        """`timeout_s`: a deadline around each backend call; None when the backend enforces its
        own (the Redis adapter does, connecting included)."""
        self._backend = backend
        self._breaker = breaker
        self._timeout_s = timeout_s

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self._breaker.allow_request():
            raise CacheUnavailable("circuit open")
        try:
            if self._timeout_s is None:
                result = await call()
            else:
                async with asyncio.timeout(self._timeout_s):
                    result = await call()
        except Exception as err:
            self._breaker.record_failure()
            log.debug("cache call failed: %r", err)
            raise CacheUnavailable(type(err).__name__) from err
        self._breaker.record_success()
        return result

    def prefetch(self, key: str) -> None:
        """Send the GET of `key` now, without waiting; this call's next `lookup(key)` takes its
        reply (shared/grpc_interceptor.py overlaps it with the session check). Only while the
        circuit is closed: a prefetch must never take the probe that would close it."""
        if self._breaker.state is not CircuitState.CLOSED:
            return
        sent = self._backend.send_get(key)
        if sent is None:
            return
        pending = asyncio.ensure_future(sent)
        # Its lookup may never await it (the gate refused the call, or the circuit opened
        # meanwhile): its error is retrieved here, so that asyncio does not log it as lost.
        pending.add_done_callback(_retrieve)
        prefetched = _prefetched.get()
        if prefetched is None:
            prefetched = {}
            _prefetched.set(prefetched)
        prefetched[key] = pending

    async def lookup(self, key: str) -> CacheEntry | None:
        prefetched = _prefetched.get()
        pending = prefetched.pop(key, None) if prefetched else None
        if pending is not None:
            raw = await self._guarded(lambda: pending)
        else:
            raw = await self._guarded(lambda: self._backend.get(key))
        return decode_entry(raw) if raw is not None else None

    async def probe_or_lease(
        self, key: str, lease_key: str, min_version: int, token: str, lease_ms: int
    ) -> LeaseProbe:
        return await self._guarded(
            lambda: self._backend.get_or_lease(key, lease_key, min_version, token, lease_ms)
        )

    async def put_if_newer(
        self, kind: str, key: str, entry: CacheEntry, ttl_ms: int, *, lease_key: str = "",
        token: str = "",
    ) -> bool:
        raw = encode_value(entry.version, entry.owner, entry.data)
        try:
            written = await self._guarded(
                lambda: self._backend.put_if_newer(
                    key, lease_key or key + ":lease", entry.version, raw, ttl_ms, token
                )
            )
        except CacheUnavailable:
            CACHE_WRITES.labels(kind, "failed").inc()
            raise
        CACHE_WRITES.labels(kind, "written" if written else "stale_rejected").inc()
        return written

    async def apply_version(self, version: int, updates: Sequence[KeyUpdate]) -> list[WriteOutcome]:
        """One compare-and-set over keys of one entity (one hash tag): an event's update."""
        raw = [RawKeyUpdate(u.key, u.mode.value, u.data, u.ttl_ms,
                            min(u.tombstone_ttl_ms or u.ttl_ms, u.ttl_ms), u.keep)
               for u in updates]
        try:
            outcomes = await self._guarded(lambda: self._backend.apply_version(version, raw))
        except CacheUnavailable:
            for update in updates:
                CACHE_WRITES.labels(update.kind, "failed").inc()
            raise
        for update, outcome in zip(updates, outcomes, strict=True):
            CACHE_WRITES.labels(update.kind, _OUTCOME_LABEL[outcome]).inc()
        return outcomes

    async def release_lease(self, lease_key: str, token: str) -> None:
        await self._guarded(lambda: self._backend.release_lease(lease_key, token))
