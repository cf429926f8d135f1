"""PostgreSQL side of transfers: `transfer_money` (live definition beside this file, in
sql/transfer_money.sql) for a transfer alone, `transfer_money_batch` (sql/transfer_money_batch.sql)
for transfers that arrive while every lane is busy (adapters/transfer_batches.py): one round
trip either way. Plus the reads of GetTransfer and ListTransfers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from services.transfer.adapters.transfer_batches import TransferBatches
from services.transfer.domain import (
    OutboxEvent,
    SourceBalance,
    Transfer,
    TransferCommand,
    TransferOutcome,
    parse_rejection,
)
from services.transfer.service_layer.ports import TreasuryParties
from shared.errors import Unavailable
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

# Deadlocks cannot happen between transfers (one lock order), but other writers of `accounts`
# may lock differently; serialization failures appear if someone raises the isolation level.
# Both roll the whole statement back, so running it again is safe.
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
MAX_ATTEMPTS = 5
_T = TypeVar("_T")

# The live definition of the function called below. Migrations install frozen copies of it (a
# change to the function is a new migration carrying the new text; a test holds the newest copy
# to this file). Its owner, SECURITY DEFINER and search_path are not in the text: migration 0007
# sets them with ALTER FUNCTION, and a replacement must set them again.
TRANSFER_MONEY_SQL = Path(__file__).parent / "sql" / "transfer_money.sql"
TRANSFER_MONEY_BATCH_SQL = Path(__file__).parent / "sql" / "transfer_money_batch.sql"

_TRANSFER_SQL = (
    "SELECT outcome, reason, transfer_id::text, created_at, source_balance, source_version,"
    " outbox_ids, outbox_partitions, outbox_payloads"
    " FROM transfer_money(%(user_id)s, %(key)s, %(from_id)s, %(to_id)s, %(amount)s,"
    " %(currency)s, %(description)s, %(from_partition)s, %(to_partition)s)"
)

_BATCH_SQL = (
    "SELECT item, outcome, reason, transfer_id::text, created_at, source_balance,"
    " source_version, outbox_ids, outbox_partitions, outbox_payloads"
    " FROM transfer_money_batch(%(user_ids)s::uuid[], %(keys)s::text[], %(from_ids)s::uuid[],"
    " %(to_ids)s::uuid[], %(amounts)s::bigint[], %(currencies)s::text[],"
    " %(descriptions)s::text[], %(from_partitions)s::integer[], %(to_partitions)s::integer[])"
)
# A batch holds at most this many transfers: its locks are held until its one commit.
MAX_BATCH = 16

_SELECT_TRANSFER = (
    "SELECT t.id::text, t.user_id::text, t.from_account_id::text, t.to_account_id::text,"
    " t.amount, t.currency, t.description, coalesce(t.idempotency_key, ''), t.created_at,"
    " e.balance_after, e.account_version"
    " FROM transfers t LEFT JOIN transactions e"
    " ON e.transfer_id = t.id AND e.account_id = t.from_account_id"
)
_TREASURY_PARTIES_SQL = (
    "SELECT a.owner_user_id::text, coalesce(s.id::text, ''), coalesce(s.owner_user_id::text, '')"
    " FROM accounts a LEFT JOIN accounts s ON s.kind = 'settlement' AND s.currency = %(currency)s"
    " WHERE a.id = %(account)s::uuid AND a.kind <> 'settlement'"
)
_GET_SQL = _SELECT_TRANSFER + " WHERE t.id = %(id)s::uuid AND t.user_id = %(user_id)s::uuid"
_LIST_FIRST_SQL = (
    _SELECT_TRANSFER + " WHERE t.user_id = %(user_id)s::uuid"
    " ORDER BY t.created_at DESC, t.id DESC LIMIT %(limit)s"
)
_LIST_AFTER_SQL = (
    _SELECT_TRANSFER + " WHERE t.user_id = %(user_id)s::uuid"
    " AND (t.created_at, t.id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid)"
    " ORDER BY t.created_at DESC, t.id DESC LIMIT %(limit)s"
)


async def with_retries(operation: Callable[[], Awaitable[_T]]) -> _T:
    """Run a one-statement transaction again after a deadlock or serialization failure
    (bounded, with jittered backoff). A database that is unreachable, overloaded or too slow is
    UNAVAILABLE: safe for the client to retry, because transfers are idempotent by key."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await operation()
        except RETRYABLE as error:
            if attempt == MAX_ATTEMPTS:
                raise Unavailable("the database is busy; retry the transfer") from error
            DB_QUERIES.labels("transfer", "retry").inc()
            await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise Unavailable("the database is busy or unreachable; retry") from error
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


@dataclass(frozen=True)
class _Call:
    command: TransferCommand
    from_partition: int
    to_partition: int

    def params(self) -> dict[str, Any]:
        command = self.command
        return {
            "user_id": command.user_id, "key": command.idempotency_key,
            "from_id": command.from_account_id, "to_id": command.to_account_id,
            "amount": command.amount, "currency": command.currency,
            "description": command.description,
            "from_partition": self.from_partition, "to_partition": self.to_partition,
        }


class PostgresTransferRepository:
    def __init__(self, pool: PoolType, *, lanes: int = 1, max_batch: int = MAX_BATCH) -> None:
        """`lanes`: transfer transactions in flight at once (the rest queue and batch up)."""
        self._pool = pool
        self._batches: TransferBatches[_Call] = TransferBatches(
            self._alone, self._together, lanes=lanes, max_batch=max_batch)

    async def execute(
        self, command: TransferCommand, from_partition: int, to_partition: int
    ) -> TransferOutcome:
        row = await self._batches.submit(_Call(command, from_partition, to_partition))
        return outcome_from_row(command, row)

    async def _alone(self, call: _Call) -> Sequence[Any]:
        params = call.params()

        async def once() -> Sequence[Any]:
            DB_QUERIES.labels("transfer", "transfer_money").inc()
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_TRANSFER_SQL, params)).fetchone()
            assert row is not None  # the function always returns one row
            return row

        return await with_retries(once)

    async def _together(self, calls: list[_Call]) -> list[Sequence[Any]]:
        params = {
            "user_ids": [c.command.user_id for c in calls],
            "keys": [c.command.idempotency_key for c in calls],
            "from_ids": [c.command.from_account_id for c in calls],
            "to_ids": [c.command.to_account_id for c in calls],
            "amounts": [c.command.amount for c in calls],
            "currencies": [c.command.currency for c in calls],
            "descriptions": [c.command.description for c in calls],
            "from_partitions": [c.from_partition for c in calls],
            "to_partitions": [c.to_partition for c in calls],
        }

        async def once() -> list[Sequence[Any]]:
            DB_QUERIES.labels("transfer", "transfer_money_batch").inc()
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(_BATCH_SQL, params)).fetchall()
            if [int(r[0]) for r in rows] != list(range(1, len(calls) + 1)):
                raise ValueError("transfer_money_batch answered out of order")
            return [r[1:] for r in rows]

        return await with_retries(once)

    async def treasury_parties(self, account_id: str, currency: str) -> TreasuryParties | None:
        async def call() -> Sequence[Any] | None:
            DB_QUERIES.labels("transfer", "treasury_parties").inc()
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_TREASURY_PARTIES_SQL,
                                            {"account": account_id, "currency": currency})
                return await cursor.fetchone()

        row = await with_retries(call)
        return None if row is None else TreasuryParties(str(row[0]), str(row[1]), str(row[2]))

    async def get(self, user_id: str, transfer_id: str) -> Transfer | None:
        async def call() -> Sequence[Any] | None:
            DB_QUERIES.labels("transfer", "get_transfer").inc()
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_GET_SQL, {"id": transfer_id, "user_id": user_id})
                return await cursor.fetchone()

        row = await with_retries(call)
        return None if row is None else _transfer_from_row(row)

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Transfer]:
        params: dict[str, Any] = {"user_id": user_id, "limit": limit}
        sql = _LIST_FIRST_SQL
        if after is not None:
            sql = _LIST_AFTER_SQL
            params.update(after_ts=after[0], after_id=after[1])

        async def call() -> list[Any]:
            DB_QUERIES.labels("transfer", "list_transfers").inc()
            async with self._pool.connection() as conn:
                return await (await conn.execute(sql, params)).fetchall()

        return [_transfer_from_row(row) for row in await with_retries(call)]


def outcome_from_row(command: TransferCommand, row: Sequence[Any]) -> TransferOutcome:
    """Turn transfer_money's result row into a domain outcome."""
    outcome, reason = row[0], row[1]
    if outcome == "rejected":
        return TransferOutcome(transfer=None, replayed=False,
                               rejection=parse_rejection(reason))
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
            OutboxEvent(int(i), int(p), bytes(b))
            for i, p, b in zip(row[6], row[7], row[8], strict=True)
        )
    return TransferOutcome(transfer=transfer, replayed=outcome == "replayed", rejection=None,
                           events=events)
