"""The port between the cache logic and the store. `RedisCacheBackend` (Redis Cluster, Lua) and
`InMemoryCacheBackend` (the fake for unit tests) implement it with the same semantics."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol


class LeaseOutcome(enum.Enum):
    CACHED = 1  # a fresh enough value is cached: no load needed
    ACQUIRED = 2  # the caller holds the lease: load and fill
    HELD_ELSEWHERE = 3  # another loader (maybe another replica) holds it: wait for its fill


@dataclass(frozen=True, slots=True)
class LeaseProbe:
    outcome: LeaseOutcome
    raw_entry: bytes | None = None


class WriteOutcome(enum.IntEnum):
    STALE = 0  # rejected: the entry is already at (or above) this version
    UPDATED = 1
    TOMBSTONED = 2


@dataclass(frozen=True, slots=True)
class RawKeyUpdate:
    key: str
    mode: bytes  # b"u" keep owner and set data, b"t" tombstone, b"i" insert into a list
    data: bytes
    ttl_ms: int
    tombstone_ttl_ms: int
    keep: int = 0  # b"i": the list keeps its newest `keep` items


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    def send_get(self, key: str) -> Awaitable[bytes | None] | None:
        """Send a GET now and return its pending reply, or None when that cannot be done
        without waiting (the caller then uses `get`)."""
        ...

    async def put_if_newer(
        self, key: str, lease_key: str, version: int, raw_entry: bytes, ttl_ms: int, token: str
    ) -> bool: ...

    async def apply_version(
        self, version: int, updates: Sequence[RawKeyUpdate]
    ) -> list[WriteOutcome]: ...

    async def get_or_lease(
        self, key: str, lease_key: str, min_version: int, token: str, lease_ms: int
    ) -> LeaseProbe: ...

    async def release_lease(self, lease_key: str, token: str) -> None: ...

    async def delete(self, key: str) -> None: ...
