"""Catch-up source for lost balance-changed events: the transactional outbox in PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from services.account.adapters.balance_changed import change_from_event
from services.account.domain import BalanceChange
from shared.events import TOPIC_BALANCE_CHANGED, decode_balance_changed
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

log = logging.getLogger(__name__)

# The newest row per account is enough: the cache only moves forward. For one account the rows'
# ids follow its versions, because each row is inserted while that account's row lock is held.
_CATCH_UP_SQL = (
    "SELECT DISTINCT ON (aggregate_id) payload FROM outbox"
    " WHERE topic = %(topic)s AND partition = ANY(%(partitions)s::integer[])"
    "   AND created_at > now() - make_interval(secs => %(window_s)s::float8)"
    " ORDER BY aggregate_id, id DESC"
)


def decode_payloads(payloads: Sequence[bytes]) -> list[BalanceChange]:
    """Outbox payloads as changes; one this release cannot parse is logged and skipped."""
    changes = []
    for payload in payloads:
        try:
            changes.append(change_from_event(decode_balance_changed(payload)))
        except DecodeError:
            log.error("undecodable outbox payload skipped")
    return changes


class OutboxReader:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool

    async def balance_changes(
        self, partitions: Sequence[int], window_s: float
    ) -> list[BalanceChange]:
        DB_QUERIES.labels("account", "outbox_catch_up").inc()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _CATCH_UP_SQL,
                {"topic": TOPIC_BALANCE_CHANGED, "partitions": list(partitions),
                 "window_s": window_s},
            )
            return decode_payloads([bytes(row[0]) for row in await cursor.fetchall()])
