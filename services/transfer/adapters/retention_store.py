"""The DELETEs of the transfer service's retention job: one statement per batch, each a short
transaction of its own (autocommit), each an index range scan on indexes the tables already
have: outbox rows through outbox_partition_time_idx (partition, created_at), one range per
partition (no index of its own: one more index would cost every transfer's outbox insert);
rejections through transfer_rejections_created_idx."""

from __future__ import annotations

from typing import Any

from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

# Confirmed rows created before the retention, up to `per_partition` of each partition. A row
# is confirmed within seconds of its creation (by the service, or the relay after a failure),
# so "created before" is "confirmed about then" too; an unconfirmed row is never deleted.
_DELETE_CONFIRMED_OUTBOX = (
    "DELETE FROM outbox WHERE id IN ("
    " SELECT o.id FROM generate_series(0, %(partitions)s - 1) AS p (n)"
    " CROSS JOIN LATERAL ("
    "  SELECT id FROM outbox WHERE partition = p.n"
    "  AND created_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    "  AND published_at IS NOT NULL LIMIT %(per_partition)s) AS o)"
)
_DELETE_REJECTIONS = (
    "DELETE FROM transfer_rejections WHERE (user_id, idempotency_key) IN ("
    " SELECT user_id, idempotency_key FROM transfer_rejections"
    " WHERE created_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(limit)s)"
)


class PostgresTransferRetention:
    def __init__(self, pool: PoolType, partitions: int) -> None:
        self._pool = pool
        self._partitions = partitions

    async def _delete(self, name: str, statement: str, params: dict[str, Any]) -> int:
        DB_QUERIES.labels("transfer", name).inc()
        async with self._pool.connection() as conn:
            return (await conn.execute(statement, params)).rowcount

    async def delete_confirmed_outbox(self, older_than_s: float, limit: int) -> int:
        """Up to `limit` rows, a share of it per partition."""
        return await self._delete("retention_outbox", _DELETE_CONFIRMED_OUTBOX, {
            "partitions": self._partitions, "older_than_s": older_than_s,
            "per_partition": max(1, limit // self._partitions)})

    async def delete_rejections(self, older_than_s: float, limit: int) -> int:
        return await self._delete("retention_rejections", _DELETE_REJECTIONS,
                                  {"older_than_s": older_than_s, "limit": limit})
