"""PostgreSQL reads for the account service: one statement, one round trip each.

psycopg's pool in autocommit mode (`shared/pg_pool.py`): a read is the statement alone, without
the BEGIN/ROLLBACK an SQLAlchemy connection wraps it in, and each statement is prepared once per
connection (then only Bind/Execute travel). Parameters are named (`%(id)s`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from services.account.domain import (
    AccountDetails,
    AccountSnapshot,
    BalanceSnapshot,
    LedgerEntry,
    Loan,
    PagePosition,
    RecentTransactions,
    TransactionsPage,
    UserLoans,
)
from shared.errors import Unavailable
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_BALANCE_SQL = (
    "SELECT id::text, owner_user_id::text, currency, balance, version"
    " FROM accounts WHERE id = %(id)s::uuid"
)

_ENTRY_COLUMNS = (
    "t.id, t.transfer_id::text, t.amount, t.balance_after, t.counterparty_account_id::text,"
    " t.description, t.created_at"
)

# One statement, so the version and the entries come from one snapshot: the cache entry's version
# then really describes its list.
_RECENT_SQL = (
    "SELECT a.owner_user_id::text, a.currency, a.version, " + _ENTRY_COLUMNS +
    " FROM accounts a LEFT JOIN LATERAL ("
    "   SELECT * FROM transactions WHERE account_id = a.id"
    "   ORDER BY created_at DESC, id DESC LIMIT %(limit)s) t ON true"
    " WHERE a.id = %(id)s::uuid"
    " ORDER BY t.created_at DESC, t.id DESC"
)

# The account's owner comes back even when the page is empty, so the caller can tell "not yours /
# no such account" from "no entries" in the same round trip. The first page starts at +infinity.
_PAGE_SQL = (
    "WITH acc AS (SELECT owner_user_id, currency FROM accounts WHERE id = %(id)s::uuid)"
    " SELECT acc.owner_user_id::text, acc.currency, " + _ENTRY_COLUMNS +
    " FROM acc LEFT JOIN LATERAL ("
    "   SELECT * FROM transactions WHERE account_id = %(id)s::uuid"
    "     AND (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::bigint)"
    "   ORDER BY created_at DESC, id DESC LIMIT %(limit)s) t ON true"
    " ORDER BY t.created_at DESC, t.id DESC"
)

_ACCOUNT_COLUMNS = (
    "id::text, owner_user_id::text, name, currency, balance, version, status, created_at"
)
_ACCOUNT_SQL = (
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = %(id)s::uuid AND kind = 'customer'"
)
_ACCOUNTS_OF_SQL = (
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts"
    " WHERE owner_user_id = %(user)s::uuid AND kind = 'customer' ORDER BY created_at, id"
)
# A warm-up's load: every customer account of the user with its balance and newest entries, in
# one statement, so each account's balance and list come from one snapshot (one version).
_SNAPSHOTS_SQL = (
    "SELECT a.id::text, a.owner_user_id::text, a.currency, a.balance, a.version, "
    + _ENTRY_COLUMNS +
    " FROM accounts a LEFT JOIN LATERAL ("
    "   SELECT * FROM transactions WHERE account_id = a.id"
    "   ORDER BY created_at DESC, id DESC LIMIT %(limit)s) t ON true"
    " WHERE a.owner_user_id = %(user)s::uuid AND a.kind = 'customer'"
    " ORDER BY a.id, t.created_at DESC, t.id DESC"
)
_LOANS_SQL = (
    "SELECT id::text, account_id::text, principal, outstanding, currency, interest_rate_bps,"
    " status, created_at FROM loans WHERE user_id = %(user)s::uuid ORDER BY created_at, id"
)


def to_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _entry(row: Any, offset: int) -> LedgerEntry:
    return LedgerEntry(
        entry_id=int(row[offset]),
        transfer_id=row[offset + 1],
        amount=int(row[offset + 2]),
        balance_after=int(row[offset + 3]),
        counterparty_account_id=row[offset + 4],
        description=row[offset + 5],
        created_us=to_micros(row[offset + 6]),
    )


def _account(row: Any) -> AccountDetails:
    return AccountDetails(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), row[6],
                          to_micros(row[7]))


class AccountRepository:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool
        # Label children resolved once: a query should not hash its labels on every call.
        self._counted = {name: DB_QUERIES.labels("account", name) for name in (
            "balance", "recent_transactions", "account", "accounts_of", "transactions_page",
            "loans", "snapshots")}

    async def _rows(self, query_name: str, statement: str, params: dict[str, Any]) -> list[Any]:
        self._counted[query_name].inc()
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(statement, params, prepare=True)
                return await cursor.fetchall()
        except (PoolTimeout, psycopg.OperationalError) as error:
            # Busy (no connection within the pool timeout) or unreachable: a retry may succeed.
            raise Unavailable("the database is busy or unreachable; retry") from error

    async def balance(self, account_id: str) -> BalanceSnapshot | None:
        rows = await self._rows("balance", _BALANCE_SQL, {"id": account_id})
        if not rows:
            return None
        row = rows[0]
        return BalanceSnapshot(row[0], row[1], row[2], int(row[3]), int(row[4]))

    async def recent_transactions(self, account_id: str, limit: int) -> RecentTransactions | None:
        rows = await self._rows("recent_transactions", _RECENT_SQL,
                                {"id": account_id, "limit": limit})
        if not rows:
            return None
        owner, currency, version = rows[0][0], rows[0][1], int(rows[0][2])
        entries = tuple(_entry(row, 3) for row in rows if row[3] is not None)
        return RecentTransactions(account_id, owner, currency, version, entries)

    async def account(self, account_id: str) -> AccountDetails | None:
        rows = await self._rows("account", _ACCOUNT_SQL, {"id": account_id})
        return _account(rows[0]) if rows else None

    async def accounts_of(self, user_id: str) -> list[AccountDetails]:
        return [_account(row) for row in await self._rows("accounts_of", _ACCOUNTS_OF_SQL,
                                                          {"user": user_id})]

    async def transactions_page(
        self, account_id: str, after: PagePosition | None, limit: int
    ) -> TransactionsPage:
        params: dict[str, Any] = {
            "id": account_id,
            "after_ts": "infinity" if after is None else from_micros(after.created_us),
            "after_id": 0 if after is None else after.entry_id,
            "limit": limit + 1,  # one more than asked tells whether another page exists
        }
        rows = await self._rows("transactions_page", _PAGE_SQL, params)
        if not rows:
            return TransactionsPage(account_id, "", "", (), False)
        entries = tuple(_entry(row, 2) for row in rows if row[2] is not None)
        return TransactionsPage(account_id, rows[0][0], rows[0][1], entries[:limit],
                                len(entries) > limit)

    async def loans_of(self, user_id: str) -> UserLoans:
        rows = await self._rows("loans", _LOANS_SQL, {"user": user_id})
        return UserLoans(user_id, tuple(
            Loan(row[0], row[1], int(row[2]), int(row[3]), row[4], int(row[5]), row[6],
                 to_micros(row[7]))
            for row in rows
        ))

    async def snapshots_of(self, user_id: str, limit: int) -> list[AccountSnapshot]:
        rows = await self._rows("snapshots", _SNAPSHOTS_SQL, {"user": user_id, "limit": limit})
        by_account: dict[str, list[Any]] = {}
        for row in rows:
            by_account.setdefault(row[0], []).append(row)
        out = []
        for account_id, account_rows in by_account.items():
            first = account_rows[0]
            owner, currency, balance, version = first[1], first[2], int(first[3]), int(first[4])
            entries = tuple(_entry(row, 5) for row in account_rows if row[5] is not None)
            out.append(AccountSnapshot(
                BalanceSnapshot(account_id, owner, currency, balance, version),
                RecentTransactions(account_id, owner, currency, version, entries)))
        return out
