"""PostgreSQL side of the outbox: confirming rows published, and the relay's claim of rows that
stayed unconfirmed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from services.transfer.domain import OutboxEvent
from shared.events import TOPIC_BALANCE_CHANGED
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

# `published_at IS NULL` keeps a second confirmation (the relay and the service racing) from
# moving the timestamp; the partial index outbox_unpublished_idx serves every query here.
_MARK_SQL = (
    "UPDATE outbox SET published_at = now()"
    " WHERE id = ANY(%(ids)s::bigint[]) AND published_at IS NULL"
)
_CLAIM_SQL = (
    "SELECT id, partition, payload FROM outbox"
    " WHERE published_at IS NULL AND topic = %(topic)s"
    " AND created_at < now() - make_interval(secs => %(min_age_s)s::float8)"
    " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
_BACKLOG_SQL = (
    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    " AND created_at < now() - make_interval(secs => %(min_age_s)s::float8)"
)


@dataclass
class _ClaimedBatch:
    events: Sequence[OutboxEvent]
    _conn: AsyncConnection[Any]

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            DB_QUERIES.labels("transfer", "outbox_mark").inc()
            await self._conn.execute(_MARK_SQL, {"ids": list(outbox_ids)})


class PostgresOutboxStore:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        DB_QUERIES.labels("transfer", "outbox_mark").inc()
        async with self._pool.connection() as conn:
            await conn.execute(_MARK_SQL, {"ids": list(outbox_ids)})

    @asynccontextmanager
    async def claim_unpublished(
        self, min_age_s: float, limit: int
    ) -> AsyncIterator[_ClaimedBatch]:
        """The rows stay locked until the context ends (commit), so a second relay skips them."""
        async with self._pool.connection() as conn, conn.transaction():
            DB_QUERIES.labels("transfer", "outbox_claim").inc()
            cursor = await conn.execute(
                _CLAIM_SQL,
                {"topic": TOPIC_BALANCE_CHANGED, "min_age_s": min_age_s, "limit": limit},
            )
            events = [OutboxEvent(int(r[0]), int(r[1]), bytes(r[2]))
                      for r in await cursor.fetchall()]
            yield _ClaimedBatch(events, conn)

    async def backlog(self, min_age_s: float) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_BACKLOG_SQL, {"min_age_s": min_age_s})).fetchone()
        return int(row[0]) if row else 0
