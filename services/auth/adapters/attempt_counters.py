"""Login and registration attempt counters in PostgreSQL (`login_attempt_windows`, migration
0006): the durable record every replica shares.

PostgreSQL, not Redis: the Redis Cluster runs `allkeys-lru`, so any key may be evicted, and a
failover can lose acknowledged writes; a counter that an eviction or a failover resets is a limit
an attacker can reset by filling the cache. PostgreSQL is asked for every login anyway (the
credentials live there), and a counter update costs about a millisecond against argon2's tens, so
Redis is not used as a front for these counters at all.

A `take` is one transaction: one upsert makes sure the rows exist and locks them, in key order
(two attempts on the same counters never deadlock), and returns them all; the rules
(services/auth/domain.py) decide on the locked state with PostgreSQL's clock (one clock for every
replica); the new state is written only if every rule let the attempt go. Parallel attempts
therefore queue on the row locks and each sees the others' counts: N parallel guesses cannot
slip past a counter that had one slot left.

Rows of ended windows are deleted as the service goes, at most once every few minutes per process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from services.auth.domain import Window
from services.auth.service_layer.ports import CounterRule
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType, unavailable_when_unreachable

_PURGE_EVERY_S = 300.0

# A new counter starts empty with its window already ended, which every rule reads as "nothing
# counted"; a refused attempt leaves such rows behind for the purge. An existing row gets a no-op
# update: that locks it and makes RETURNING report it, so every key comes back locked even if a
# purge deleted its row a moment before (a SELECT ... FOR UPDATE after an INSERT ... DO NOTHING
# would miss it).
# The clock is clock_timestamp(), read once the row is locked, not now(): now() is the moment the
# transaction began, and a take that queued behind others on the lock would judge their windows
# from before they were written (a window that another take opened at its own, later start would
# look longer than the rule allows, and an ended window could look open).
_LOCK = """
INSERT INTO login_attempt_windows AS w (counter_key, attempts, window_ends_at)
SELECT k, 0, clock_timestamp() FROM unnest(%(keys)s::text[]) AS k ORDER BY k
ON CONFLICT (counter_key) DO UPDATE SET attempts = w.attempts
RETURNING w.counter_key, w.attempts, extract(epoch FROM w.window_ends_at)::float8,
          extract(epoch FROM clock_timestamp())::float8
"""
_WRITE = """
UPDATE login_attempt_windows AS w SET attempts = n.attempts, window_ends_at = to_timestamp(n.ends)
FROM unnest(%(keys)s::text[], %(attempts)s::int[], %(ends)s::float8[]) AS n(k, attempts, ends)
WHERE w.counter_key = n.k
"""
_GIVE_BACK = """
UPDATE login_attempt_windows
SET attempts = CASE WHEN counter_key = ANY(%(clear)s::text[]) THEN 0 ELSE attempts - 1 END,
    window_ends_at = CASE WHEN counter_key = ANY(%(clear)s::text[]) THEN clock_timestamp()
                          ELSE window_ends_at END
WHERE counter_key = ANY(%(keys)s::text[]) AND attempts > 0 AND window_ends_at > clock_timestamp()
"""
_PURGE = "DELETE FROM login_attempt_windows WHERE window_ends_at < now()"


class PostgresAttemptCounters:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool
        self._last_purge: float | None = None  # None: purge on the first attempt

    async def take(self, rules: Sequence[CounterRule]) -> float | None:
        by_key = dict(rules)
        keys = sorted(by_key)
        DB_QUERIES.labels("auth", "attempt_take").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn, conn.transaction():
                rows = await (await conn.execute(_LOCK, {"keys": keys})).fetchall()
                waits: list[float] = []
                updated: list[tuple[str, Window]] = []
                for key, attempts, ends_at, now in rows:
                    verdict = by_key[key].admit(Window(int(attempts), float(ends_at)), float(now))
                    if isinstance(verdict, Window):
                        updated.append((key, verdict))
                    else:
                        waits.append(verdict)
                if not waits:
                    await conn.execute(_WRITE, {
                        "keys": [k for k, _ in updated],
                        "attempts": [w.attempts for _, w in updated],
                        "ends": [w.ends_at for _, w in updated],
                    })
        await self._purge_now_and_then()
        return max(waits) if waits else None

    async def give_back(self, keys: Sequence[str], clear: Sequence[str] = ()) -> None:
        if not keys:
            return
        DB_QUERIES.labels("auth", "attempt_give_back").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                await conn.execute(_GIVE_BACK, {"keys": list(keys), "clear": list(clear)})

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if self._last_purge is not None and now - self._last_purge < _PURGE_EVERY_S:
            return
        self._last_purge = now
        DB_QUERIES.labels("auth", "attempt_purge").inc()
        async with self._pool.connection() as conn:
            await conn.execute(_PURGE)
