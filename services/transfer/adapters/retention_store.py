"""The DELETEs of the transfer service's retention job: one statement per batch, each a short
transaction of its own (autocommit). Migration 0004's indexes make each batch an index range
scan: outbox rows by `published_at` (confirmed rows only), rejections by `created_at`."""

from __future__ import annotations

from typing import Any

from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

_DELETE_CONFIRMED_OUTBOX = (
    "DELETE FROM outbox WHERE id IN ("
    " SELECT id FROM outbox"
    " WHERE published_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(limit)s)"
)
_DELETE_REJECTIONS = (
    "DELETE FROM transfer_rejections WHERE (user_id, idempotency_key) IN ("
    " SELECT user_id, idempotency_key FROM transfer_rejections"
    " WHERE created_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(limit)s)"
)


class PostgresTransferRetention:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool

    async def _delete(self, name: str, statement: str, params: dict[str, Any]) -> int:
        DB_QUERIES.labels("transfer", name).inc()
        async with self._pool.connection() as conn:
            return (await conn.execute(statement, params)).rowcount

    async def delete_confirmed_outbox(self, older_than_s: float, limit: int) -> int:
        return await self._delete("retention_outbox", _DELETE_CONFIRMED_OUTBOX,
                                  {"older_than_s": older_than_s, "limit": limit})

    async def delete_rejections(self, older_than_s: float, limit: int) -> int:
        return await self._delete("retention_rejections", _DELETE_REJECTIONS,
                                  {"older_than_s": older_than_s, "limit": limit})
