"""What the use cases need from the outside world. Adapters implement these; unit tests use the
fakes in `adapters/fakes.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.account.domain import (
    AccountDetails,
    AccountSnapshot,
    BalanceChange,
    BalanceSnapshot,
    PagePosition,
    RecentTransactions,
    TransactionsPage,
    UserLoans,
)


class AccountReader(Protocol):
    """Reads of the source of truth (PostgreSQL). Each method is one statement, one snapshot."""

    async def balance(self, account_id: str) -> BalanceSnapshot | None: ...

    async def recent_transactions(
        self, account_id: str, limit: int
    ) -> RecentTransactions | None: ...

    async def account(self, account_id: str) -> AccountDetails | None: ...

    async def accounts_of(self, user_id: str) -> list[AccountDetails]: ...

    async def transactions_page(
        self, account_id: str, after: PagePosition | None, limit: int
    ) -> TransactionsPage: ...

    async def loans_of(self, user_id: str) -> UserLoans: ...

    async def snapshots_of(self, user_id: str, limit: int) -> list[AccountSnapshot]:
        """Every customer account of the user: its balance and newest `limit` entries, all in
        one statement (one snapshot: each account's balance and list share a version)."""
        ...


class OutboxReader(Protocol):
    async def balance_changes(
        self, partitions: Sequence[int], window_s: float
    ) -> list[BalanceChange]:
        """The `BalanceChanged` events of these partitions committed in the last `window_s`
        seconds: the newest per account is enough, older ones are stale anyway."""
        ...
