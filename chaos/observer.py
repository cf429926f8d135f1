"""What the run knows besides the clients' replies: PostgreSQL's version of every account over
time (polled), and the cache against a snapshot of it."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from services.account.service_layer.cache_layout import balance_key
from shared.cache import decode_entry
from shared.redis_pipeline import ClusterPipeline

_VERSIONS_SQL = "SELECT id::text, version FROM accounts WHERE id = ANY(%(ids)s::uuid[])"


class VersionHistory:
    """When each version of each account was first seen in PostgreSQL: the staleness of a read
    is how long before it started a newer version had been committed (to `interval_s`)."""

    def __init__(self, dsn: str, accounts: Sequence[str], interval_s: float = 0.1) -> None:
        self._dsn = dsn
        self._accounts = list(accounts)
        self.interval_s = interval_s
        self._seen: dict[str, tuple[list[float], list[int]]] = {
            a: ([], []) for a in self._accounts}

    async def snapshot(self) -> dict[str, int]:
        """PostgreSQL's versions now (retried while it does not answer)."""
        while True:
            try:
                async with await AsyncConnection.connect(self._dsn, autocommit=True,
                                                         connect_timeout=3) as conn:
                    return await self._query(conn)
            except Exception:
                await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await AsyncConnection.connect(self._dsn, autocommit=True,
                                                         connect_timeout=3) as conn:
                    while not stop.is_set():
                        self._record(time.monotonic(), await self._query(conn))
                        await asyncio.sleep(self.interval_s)
            except Exception:  # PostgreSQL restarting: poll again once it answers
                await asyncio.sleep(self.interval_s)

    def superseded_at(self, account: str, version: int) -> float | None:
        """When a version newer than `version` was first seen, if it was."""
        times, versions = self._seen[account]
        index = bisect.bisect_right(versions, version)
        return times[index] if index < len(times) else None

    async def _query(self, conn: AsyncConnection[Any]) -> dict[str, int]:
        cursor = await conn.execute(_VERSIONS_SQL, {"ids": self._accounts})
        return {str(a): int(v) for a, v in await cursor.fetchall()}

    def _record(self, now: float, versions: dict[str, int]) -> None:
        for account, version in versions.items():
            times, seen = self._seen[account]
            if not seen or version > seen[-1]:
                times.append(now)
                seen.append(version)


class CacheProbe:
    """The cached balances of the run's accounts, read with the services' own client."""

    def __init__(self, redis: ClusterPipeline) -> None:
        self._redis = redis

    async def behind(self, snapshot: dict[str, int]) -> dict[str, tuple[int, int]] | None:
        """Accounts whose cached balance is older than the snapshot: id -> (cached, stored).
        No entry, or a tombstone, is not behind (a read loads PostgreSQL). None when Redis
        could not be read."""
        keys = {account: balance_key(account) for account in snapshot}
        try:
            raws = await asyncio.gather(*(self._redis.execute(key, "GET", key)
                                          for key in keys.values()))
        except Exception:
            return None
        behind = {}
        for (account, stored), raw in zip(snapshot.items(), raws, strict=True):
            entry = decode_entry(raw) if raw is not None else None
            if entry is not None and not entry.tombstone and entry.version < stored:
                behind[account] = (entry.version, stored)
        return behind

    async def caught_up_after(self, snapshot: dict[str, int], give_up_s: float
                              ) -> tuple[float | None, dict[str, tuple[int, int]]]:
        """Seconds until no cached balance is older than the snapshot (None: not within
        `give_up_s`), and what was still behind at the last look."""
        started = time.monotonic()
        last: dict[str, tuple[int, int]] = {}
        while time.monotonic() - started < give_up_s:
            behind = await self.behind(snapshot)
            if behind == {}:
                return time.monotonic() - started, {}
            if behind is not None:
                last = behind
            await asyncio.sleep(0.05)
        return None, last

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.close()
