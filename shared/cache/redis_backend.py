"""The Redis Cluster adapter of `CacheBackend`, on the pipelined client (shared/redis_pipeline.py):
a plain GET on the hit path, EVALSHA otherwise, each call with the client's hard deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from shared.cache import scripts
from shared.cache.backend import LeaseOutcome, LeaseProbe, RawKeyUpdate, WriteOutcome
from shared.redis_pipeline import ClusterPipeline, Script

_PUT_IF_NEWER = Script(scripts.PUT_IF_NEWER)
_APPLY_VERSION = Script(scripts.APPLY_VERSION)
_GET_OR_LEASE = Script(scripts.GET_OR_LEASE)
_RELEASE_LEASE = Script(scripts.RELEASE_LEASE)
SCRIPTS = (_PUT_IF_NEWER, _APPLY_VERSION, _GET_OR_LEASE, _RELEASE_LEASE)


class RedisCacheBackend:
    def __init__(self, redis: ClusterPipeline) -> None:
        self._redis = redis

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._redis.execute(key, "GET", key))

    def send_get(self, key: str) -> asyncio.Future[Any] | None:
        return self._redis.send_now(key, "GET", key)

    async def put_if_newer(
        self, key: str, lease_key: str, version: int, raw_entry: bytes, ttl_ms: int, token: str
    ) -> bool:
        written = await self._redis.run(
            _PUT_IF_NEWER, (key, lease_key), (version, raw_entry, ttl_ms, token)
        )
        return bool(written)

    async def apply_version(
        self, version: int, updates: Sequence[RawKeyUpdate]
    ) -> list[WriteOutcome]:
        args: list[Any] = [version]
        for update in updates:
            args.extend((update.mode, update.data, update.ttl_ms, update.tombstone_ttl_ms,
                         update.keep))
        outcomes = await self._redis.run(_APPLY_VERSION, [u.key for u in updates], args)
        return [WriteOutcome(int(o)) for o in outcomes]

    async def get_or_lease(
        self, key: str, lease_key: str, min_version: int, token: str, lease_ms: int
    ) -> LeaseProbe:
        reply = await self._redis.run(
            _GET_OR_LEASE, (key, lease_key), (min_version, token, lease_ms)
        )
        outcome = LeaseOutcome(int(reply[0]))
        return LeaseProbe(outcome, reply[1] if outcome is LeaseOutcome.CACHED else None)

    async def release_lease(self, lease_key: str, token: str) -> None:
        await self._redis.run(_RELEASE_LEASE, (lease_key,), (token,))

    async def delete(self, key: str) -> None:
        await self._redis.execute(key, "DEL", key)
