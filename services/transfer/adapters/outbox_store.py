"""PostgreSQL side of the outbox: marking rows published, and the relay's claim of stale rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.transfer.domain import OutboxEvent
from shared.events import TOPIC_BALANCE_CHANGED
from shared.metrics import DB_QUERIES

# `published_at IS NULL` keeps a second mark (the relay and the service racing) from moving the
# timestamp; the partial index outbox_unpublished_idx serves every query here.
_MARK_SQL = text(
    "UPDATE outbox SET published_at = now()"
    " WHERE id = ANY(CAST(:ids AS bigint[])) AND published_at IS NULL"
)
_CLAIM_SQL = text(
    "SELECT id, partition, payload FROM outbox"
    " WHERE published_at IS NULL AND topic = :topic"
    " AND created_at < now() - make_interval(secs => :min_age_s)"
    " ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_BACKLOG_SQL = text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
_PURGE_SQL = text(
    "DELETE FROM transfer_rejections"
    " WHERE created_at < now() - make_interval(secs => :older_than_s)"
)


@dataclass
class _ClaimedBatch:
    events: Sequence[OutboxEvent]
    _conn: AsyncConnection

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            DB_QUERIES.labels("transfer", "outbox_mark").inc()
            await self._conn.execute(_MARK_SQL, {"ids": list(outbox_ids)})


class PostgresOutboxStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        DB_QUERIES.labels("transfer", "outbox_mark").inc()
        async with self._autocommit.connect() as conn:
            await conn.execute(_MARK_SQL, {"ids": list(outbox_ids)})

    @asynccontextmanager
    async def claim_unpublished(
        self, min_age_s: float, limit: int
    ) -> AsyncIterator[_ClaimedBatch]:
        """The rows stay locked until the context ends (commit), so a second relay skips them."""
        async with self._engine.begin() as conn:
            DB_QUERIES.labels("transfer", "outbox_claim").inc()
            rows = await conn.execute(
                _CLAIM_SQL,
                {"topic": TOPIC_BALANCE_CHANGED, "min_age_s": min_age_s, "limit": limit},
            )
            events = [OutboxEvent(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]
            yield _ClaimedBatch(events, conn)

    async def backlog(self) -> int:
        async with self._autocommit.connect() as conn:
            return int((await conn.execute(_BACKLOG_SQL)).scalar_one())

    async def purge_rejections(self, older_than_s: int) -> int:
        async with self._autocommit.connect() as conn:
            result = await conn.execute(_PURGE_SQL, {"older_than_s": older_than_s})
            return int(result.rowcount)
