"""Failed-login limits in PostgreSQL (`login_attempt_windows`, migration 0006): the same rules as
the Redis limiter (adapters/login_limiter.py), for while Redis cannot count.

The counters are the Redis limiter's keys (an email's hash, a client address), each a fixed
window that starts at its first counted attempt. A reservation is one statement for both
counters: each takes a slot unless its window is used up, and reports how long the window has
left; if one refuses, the other's slot is given back at once (the Redis limiter does the same),
so a refused attempt counts nowhere. A release is one UPDATE that never goes below zero and never
revives an ended window. Rows of ended windows are deleted as the service goes, at most once
every few minutes per process.
"""

from __future__ import annotations

import time

from services.auth.adapters.login_limiter import counter_keys, too_many_attempts
from services.auth.service_layer.ports import AttemptReservation
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

_PURGE_EVERY_S = 300.0

# One row per counter. The CTE's INSERT takes a slot where the window allows it (a new window
# when the old one ended); the outer SELECT still sees the rows as they were before it, which is
# what a refused counter needs (when its window ends).
_RESERVE = """
WITH taken AS (
    INSERT INTO login_attempt_windows AS w (counter_key, attempts, window_ends_at)
    SELECT k, 1, now() + make_interval(secs => %(window_s)s) FROM unnest(%(keys)s::text[]) AS k
    ON CONFLICT (counter_key) DO UPDATE SET
        attempts = CASE WHEN w.window_ends_at <= now() THEN 1 ELSE w.attempts + 1 END,
        window_ends_at = CASE WHEN w.window_ends_at <= now() THEN EXCLUDED.window_ends_at
                              ELSE w.window_ends_at END
    WHERE w.window_ends_at <= now() OR w.attempts < %(max)s
    RETURNING w.counter_key
)
SELECT k, k IN (SELECT counter_key FROM taken),
       (SELECT greatest(0, ceil(extract(epoch FROM w.window_ends_at - now()) * 1000))::bigint
          FROM login_attempt_windows w WHERE w.counter_key = k)
FROM unnest(%(keys)s::text[]) AS k
"""
_RELEASE = """
UPDATE login_attempt_windows SET attempts = attempts - 1
WHERE counter_key = ANY(%(keys)s::text[]) AND attempts > 0 AND window_ends_at > now()
"""
_PURGE = "DELETE FROM login_attempt_windows WHERE window_ends_at < now()"


class PostgresLoginLimiter:
    def __init__(self, pool: PoolType, max_failures: int, window_s: int) -> None:
        self._pool = pool
        self._max = max_failures
        self._window_s = window_s
        self._last_purge: float | None = None  # None: purge on the first reservation

    async def reserve(self, email: str, client_address: str) -> AttemptReservation:
        keys = counter_keys(email, client_address)
        DB_QUERIES.labels("auth", "login_limit_reserve").inc()
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(
                _RESERVE, {"keys": keys, "window_s": self._window_s, "max": self._max}
            )).fetchall()
        granted = tuple(str(key) for key, taken, _ in rows if taken)
        refusals = [int(ms_left or 0) for _, taken, ms_left in rows if not taken]
        await self._purge_now_and_then()
        if refusals:
            await self.release(AttemptReservation(granted))
            raise too_many_attempts(max(refusals))
        return AttemptReservation(granted)

    async def release(self, reservation: AttemptReservation) -> None:
        if not reservation.keys:
            return
        DB_QUERIES.labels("auth", "login_limit_release").inc()
        async with self._pool.connection() as conn:
            await conn.execute(_RELEASE, {"keys": list(reservation.keys)})

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if self._last_purge is not None and now - self._last_purge < _PURGE_EVERY_S:
            return
        self._last_purge = now
        DB_QUERIES.labels("auth", "login_limit_purge").inc()
        async with self._pool.connection() as conn:
            await conn.execute(_PURGE)
