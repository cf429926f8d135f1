"""PostgreSQL reads for the account service."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.account.domain import BalanceSnapshot
from shared.metrics import DB_QUERIES

_BALANCE_SQL = text(
    "SELECT id::text, owner_user_id::text, currency, balance, version"
    " FROM accounts WHERE id = CAST(:id AS uuid)"
)


class AccountRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def balance(self, account_id: str) -> BalanceSnapshot | None:
        DB_QUERIES.labels("account", "balance").inc()
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BALANCE_SQL, {"id": account_id})).first()
        if row is None:
            return None
        return BalanceSnapshot(row[0], row[1], row[2], int(row[3]), int(row[4]))
