"""PostgreSQL side of transfers: one call of `transfer_money` (migration 0002) per transfer, plus
the reads of GetTransfer and ListTransfers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.transfer.domain import (
    OutboxEvent,
    SourceBalance,
    Transfer,
    TransferCommand,
    TransferOutcome,
)
from shared.errors import Unavailable
from shared.metrics import DB_QUERIES

# Deadlocks cannot happen between transfers (one lock order), but other writers of `accounts`
# may lock differently; serialization failures appear if someone raises the isolation level.
# Both roll the whole statement back, so running it again is safe.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
MAX_ATTEMPTS = 5
_T = TypeVar("_T")

_TRANSFER_SQL = text(
    "SELECT outcome, reason, transfer_id::text, created_at, source_balance, source_version,"
    " outbox_ids, outbox_partitions, outbox_payloads"
    " FROM transfer_money(CAST(:user_id AS uuid), :key, CAST(:from_id AS uuid),"
    " CAST(:to_id AS uuid), :amount, :currency, :description, :from_partition, :to_partition)"
)

_SELECT_TRANSFER = (
    "SELECT t.id::text, t.user_id::text, t.from_account_id::text, t.to_account_id::text,"
    " t.amount, t.currency, t.description, coalesce(t.idempotency_key, ''), t.created_at,"
    " e.balance_after, e.account_version"
    " FROM transfers t LEFT JOIN transactions e"
    " ON e.transfer_id = t.id AND e.account_id = t.from_account_id"
)
_GET_SQL = text(
    _SELECT_TRANSFER
    + " WHERE t.id = CAST(:id AS uuid) AND t.user_id = CAST(:user_id AS uuid)"
)
_LIST_FIRST_SQL = text(
    _SELECT_TRANSFER + " WHERE t.user_id = CAST(:user_id AS uuid)"
    " ORDER BY t.created_at DESC, t.id DESC LIMIT :limit"
)
_LIST_AFTER_SQL = text(
    _SELECT_TRANSFER + " WHERE t.user_id = CAST(:user_id AS uuid)"
    " AND (t.created_at, t.id) < (CAST(:after_ts AS timestamptz), CAST(:after_id AS uuid))"
    " ORDER BY t.created_at DESC, t.id DESC LIMIT :limit"
)


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


async def with_retries(operation: Callable[[], Awaitable[_T]]) -> _T:
    """Run a whole-transaction operation again after a deadlock or serialization failure
    (bounded, with jittered backoff); a database that cannot be reached is UNAVAILABLE, which
    is safe to retry for the client because transfers are idempotent by key."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await operation()
        except DBAPIError as error:
            if _sqlstate(error) in RETRYABLE_SQLSTATES and attempt < MAX_ATTEMPTS:
                DB_QUERIES.labels("transfer", "retry").inc()
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            if error.connection_invalidated or _sqlstate(error) in (
                *RETRYABLE_SQLSTATES, "57014", "57P01", "08006", "08001", None,
            ):
                raise Unavailable("the database is busy or unreachable; retry") from error
            raise
    raise AssertionError("unreachable")


def _transfer_from_row(row: Sequence[Any]) -> Transfer:
    balance = None
    if row[9] is not None:
        balance = SourceBalance(row[2], int(row[9]), row[5], int(row[10]))
    return Transfer(
        transfer_id=row[0], user_id=row[1], from_account_id=row[2], to_account_id=row[3],
        amount=int(row[4]), currency=row[5], description=row[6], idempotency_key=row[7],
        created_at=row[8], source_balance=balance,
    )


class PostgresTransferRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        # One statement per transfer in autocommit: no BEGIN/COMMIT round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._engine = engine

    async def execute(
        self, command: TransferCommand, from_partition: int, to_partition: int
    ) -> TransferOutcome:
        params = {
            "user_id": command.user_id, "key": command.idempotency_key,
            "from_id": command.from_account_id, "to_id": command.to_account_id,
            "amount": command.amount, "currency": command.currency,
            "description": command.description,
            "from_partition": from_partition, "to_partition": to_partition,
        }

        async def call() -> Sequence[Any]:
            DB_QUERIES.labels("transfer", "transfer_money").inc()
            async with self._autocommit.connect() as conn:
                return (await conn.execute(_TRANSFER_SQL, params)).one()

        row = await with_retries(call)
        return outcome_from_row(command, row)

    async def get(self, user_id: str, transfer_id: str) -> Transfer | None:
        DB_QUERIES.labels("transfer", "get_transfer").inc()
        async with self._autocommit.connect() as conn:
            row = (await conn.execute(_GET_SQL, {"id": transfer_id, "user_id": user_id})).first()
        return None if row is None else _transfer_from_row(row)

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Transfer]:
        DB_QUERIES.labels("transfer", "list_transfers").inc()
        async with self._autocommit.connect() as conn:
            if after is None:
                result = await conn.execute(_LIST_FIRST_SQL, {"user_id": user_id, "limit": limit})
            else:
                result = await conn.execute(
                    _LIST_AFTER_SQL,
                    {"user_id": user_id, "limit": limit, "after_ts": after[0],
                     "after_id": after[1]},
                )
            return [_transfer_from_row(row) for row in result]


def outcome_from_row(command: TransferCommand, row: Sequence[Any]) -> TransferOutcome:
    """Turn transfer_money's result row into a domain outcome."""
    outcome, reason = row[0], row[1]
    if outcome == "rejected":
        return TransferOutcome(transfer=None, replayed=False, rejection=reason)
    transfer = Transfer(
        transfer_id=row[2],
        user_id=command.user_id,
        from_account_id=command.from_account_id,
        to_account_id=command.to_account_id,
        amount=command.amount,
        currency=command.currency,
        description=command.description,
        idempotency_key=command.idempotency_key,
        created_at=row[3],
        source_balance=SourceBalance(
            command.from_account_id, int(row[4]), command.currency, int(row[5])
        ),
    )
    events: tuple[OutboxEvent, ...] = ()
    if outcome == "created":
        events = tuple(
            OutboxEvent(int(i), int(p), bytes(b)) for i, p, b in zip(row[6], row[7], row[8],
                                                                     strict=True)
        )
    return TransferOutcome(transfer=transfer, replayed=outcome == "replayed", rejection=None,
                           events=events)
