"""In-memory `CacheBackend` for unit tests: the same compare-and-set rules as the Lua scripts
(`scripts.py`; the integration tests run those on the real cluster), plus fault injection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from shared.cache.backend import LeaseOutcome, LeaseProbe, RawKeyUpdate, WriteOutcome
from shared.cache.entry import decode_entry, encode_tombstone, encode_value
from shared.cache.ordered_list import insert_item


class FakeCacheError(ConnectionError):
    """What the fake raises while `down` (stands for a refused connection)."""


class InMemoryCacheBackend:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self.down = False  # every call raises FakeCacheError
        self.latency_s = 0.0  # every call sleeps this long first (a slow Redis)
        self.calls = 0

    async def _enter(self) -> None:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.down:
            raise FakeCacheError("fake cache is down")

    def raw(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    def _set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._data[key] = (value, self._clock() + ttl_ms / 1000)

    async def get(self, key: str) -> bytes | None:
        await self._enter()
        return self.raw(key)

    def send_get(self, key: str) -> asyncio.Future[bytes | None] | None:
        return asyncio.ensure_future(self.get(key))

    async def put_if_newer(
        self, key: str, lease_key: str, version: int, raw_entry: bytes, ttl_ms: int, token: str
    ) -> bool:
        await self._enter()
        written = True
        current = self.raw(key)
        entry = decode_entry(current) if current is not None else None
        if entry is not None and (
            version < entry.version if entry.tombstone else version <= entry.version
        ):
            written = False
        if written:
            self._set(key, raw_entry, ttl_ms)
        if token and self.raw(lease_key) == token.encode():
            self._data.pop(lease_key, None)
        return written

    async def apply_version(
        self, version: int, updates: Sequence[RawKeyUpdate]
    ) -> list[WriteOutcome]:
        await self._enter()
        outcomes: list[WriteOutcome] = []
        for update in updates:
            current = self.raw(update.key)
            entry = decode_entry(current) if current is not None else None
            inserted = None
            if (update.mode == b"i" and entry is not None and not entry.tombstone
                    and entry.version == version - 1):
                inserted = insert_item(entry.data, update.data, update.keep)
            if entry is not None and entry.version >= version:
                outcomes.append(WriteOutcome.STALE)
            elif update.mode == b"u" and entry is not None and not entry.tombstone:
                self._set(update.key, encode_value(version, entry.owner, update.data),
                          update.ttl_ms)
                outcomes.append(WriteOutcome.UPDATED)
            elif entry is not None and inserted is not None:
                self._set(update.key, encode_value(version, entry.owner, inserted),
                          update.ttl_ms)
                outcomes.append(WriteOutcome.UPDATED)
            else:
                self._set(update.key, encode_tombstone(version), update.tombstone_ttl_ms)
                outcomes.append(WriteOutcome.TOMBSTONED)
        return outcomes

    async def get_or_lease(
        self, key: str, lease_key: str, min_version: int, token: str, lease_ms: int
    ) -> LeaseProbe:
        await self._enter()
        current = self.raw(key)
        entry = decode_entry(current) if current is not None else None
        if current is not None and entry is not None and not entry.tombstone \
                and entry.version >= min_version:
            return LeaseProbe(LeaseOutcome.CACHED, current)
        if self.raw(lease_key) is None:
            self._set(lease_key, token.encode(), lease_ms)
            return LeaseProbe(LeaseOutcome.ACQUIRED)
        return LeaseProbe(LeaseOutcome.HELD_ELSEWHERE)

    async def release_lease(self, lease_key: str, token: str) -> None:
        await self._enter()
        if self.raw(lease_key) == token.encode():
            self._data.pop(lease_key, None)

    async def delete(self, key: str) -> None:
        await self._enter()
        self._data.pop(key, None)
