"""The Redis Cluster adapter of `CacheBackend`: plain GET on the hit path, EVALSHA otherwise."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from shared.cache import scripts
from shared.cache.backend import LeaseOutcome, LeaseProbe, RawKeyUpdate, WriteOutcome


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_PUT_IF_NEWER = _Script(scripts.PUT_IF_NEWER)
_APPLY_VERSION = _Script(scripts.APPLY_VERSION)
_GET_OR_LEASE = _Script(scripts.GET_OR_LEASE)
_RELEASE_LEASE = _Script(scripts.RELEASE_LEASE)


class RedisCacheBackend:
    def __init__(self, redis: RedisCluster) -> None:
        self._redis = redis

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A node that never saw the script (a fresh node, a promoted replica): EVAL sends the
            # source once and leaves it in that node's script cache for the next EVALSHA.
            return await self._redis.eval(script.source, len(keys), *keys, *args)

    async def get(self, key: str) -> bytes | None:
        # decode_responses=False (shared/redis_client.py): replies are bytes.
        return cast(bytes | None, await self._redis.get(key))

    async def put_if_newer(
        self, key: str, lease_key: str, version: int, raw_entry: bytes, ttl_ms: int, token: str
    ) -> bool:
        written = await self._run(
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
        outcomes = await self._run(_APPLY_VERSION, [u.key for u in updates], args)
        return [WriteOutcome(int(o)) for o in outcomes]

    async def get_or_lease(
        self, key: str, lease_key: str, min_version: int, token: str, lease_ms: int
    ) -> LeaseProbe:
        reply = await self._run(_GET_OR_LEASE, (key, lease_key), (min_version, token, lease_ms))
        outcome = LeaseOutcome(int(reply[0]))
        return LeaseProbe(outcome, reply[1] if outcome is LeaseOutcome.CACHED else None)

    async def release_lease(self, lease_key: str, token: str) -> None:
        await self._run(_RELEASE_LEASE, (lease_key,), (token,))

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)
