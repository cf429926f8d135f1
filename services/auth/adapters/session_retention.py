"""The DELETE of the auth service's retention job: one statement per batch, autocommit.

A session ends at the earliest of its revocation, its last use plus the idle TTL, and its
creation plus the absolute lifetime. No index serves the three together (an index on
`last_used_at` would make every confirmation's UPDATE non-HOT), so a batch scans the table; the
job runs every few minutes, and the table holds at most the absolute lifetime plus the
retention of logins."""

from __future__ import annotations

from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

_DELETE_ENDED = (
    "DELETE FROM sessions WHERE id IN ("
    " SELECT id FROM sessions"
    " WHERE revoked_at < now() - make_interval(secs => %(keep_s)s::float8)"
    " OR last_used_at < now() - make_interval(secs => %(idle_s)s::float8 + %(keep_s)s::float8)"
    " OR created_at < now() - make_interval(secs => %(absolute_s)s::float8"
    " + %(keep_s)s::float8)"
    " LIMIT %(limit)s)"
)


class PostgresSessionRetention:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool

    async def delete_ended_sessions(self, *, idle_ttl_s: float, absolute_ttl_s: float,
                                    keep_s: float, limit: int) -> int:
        DB_QUERIES.labels("auth", "retention_sessions").inc()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_DELETE_ENDED, {
                "idle_s": idle_ttl_s, "absolute_s": absolute_ttl_s, "keep_s": keep_s,
                "limit": limit})
            return cursor.rowcount
