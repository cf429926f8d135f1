"""In-memory stand-ins for the adapters, for unit tests (beside the real ones, never mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from services.account.adapters.event_subscription import Notice, SubscriptionLost
from services.account.adapters.outbox_reader import decode_payloads
from services.account.domain import (
    AccountDetails,
    AccountSnapshot,
    BalanceChange,
    BalanceSnapshot,
    LedgerEntry,
    Loan,
    PagePosition,
    RecentTransactions,
    TransactionsPage,
    UserLoans,
)


class FakeAccountReader:
    """Accounts, ledgers and loans in dicts; counts loads per method."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountDetails] = {}
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.loans: list[Loan] = []
        self.loads: dict[str, int] = {}
        self.delay_s = 0.0

    async def _count(self, name: str) -> None:
        self.loads[name] = self.loads.get(name, 0) + 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    def add_account(self, account: AccountDetails) -> None:
        self.accounts[account.account_id] = account
        self.ledgers.setdefault(account.account_id, [])

    def post(self, account_id: str, entry: LedgerEntry) -> None:
        """A committed ledger entry: the balance and version move with it."""
        account = self.accounts[account_id]
        self.accounts[account_id] = replace(
            account, minor_units=entry.balance_after, version=account.version + 1
        )
        self.ledgers[account_id].append(entry)

    async def balance(self, account_id: str) -> BalanceSnapshot | None:
        await self._count("balance")
        account = self.accounts.get(account_id)
        if account is None:
            return None
        return BalanceSnapshot(account.account_id, account.owner_user_id, account.currency,
                               account.minor_units, account.version)

    def _newest_first(self, account_id: str) -> list[LedgerEntry]:
        return sorted(self.ledgers.get(account_id, []),
                      key=lambda e: (e.created_us, e.entry_id), reverse=True)

    async def recent_transactions(self, account_id: str, limit: int) -> RecentTransactions | None:
        await self._count("recent_transactions")
        account = self.accounts.get(account_id)
        if account is None:
            return None
        return RecentTransactions(account_id, account.owner_user_id, account.currency,
                                  account.version, tuple(self._newest_first(account_id)[:limit]))

    async def account(self, account_id: str) -> AccountDetails | None:
        await self._count("account")
        return self.accounts.get(account_id)

    async def accounts_of(self, user_id: str) -> list[AccountDetails]:
        await self._count("accounts_of")
        return [a for a in self.accounts.values() if a.owner_user_id == user_id]

    async def snapshots_of(self, user_id: str, limit: int) -> list[AccountSnapshot]:
        await self._count("snapshots")
        out = []
        for account in sorted(self.accounts.values(), key=lambda a: a.account_id):
            if account.owner_user_id != user_id:
                continue
            balance = BalanceSnapshot(account.account_id, account.owner_user_id,
                                      account.currency, account.minor_units, account.version)
            recent = RecentTransactions(account.account_id, account.owner_user_id,
                                        account.currency, account.version,
                                        tuple(self._newest_first(account.account_id)[:limit]))
            out.append(AccountSnapshot(balance, recent))
        return out

    async def transactions_page(
        self, account_id: str, after: PagePosition | None, limit: int
    ) -> TransactionsPage:
        await self._count("transactions_page")
        account = self.accounts.get(account_id)
        if account is None:
            return TransactionsPage(account_id, "", "", (), False)
        entries = [
            e for e in self._newest_first(account_id)
            if after is None or (e.created_us, e.entry_id) < (after.created_us, after.entry_id)
        ]
        return TransactionsPage(account_id, account.owner_user_id, account.currency,
                                tuple(entries[:limit]), len(entries) > limit)

    async def loans_of(self, user_id: str) -> UserLoans:
        await self._count("loans")
        return UserLoans(user_id, tuple(loan for loan in self.loans
                                        if self.accounts[loan.account_id].owner_user_id
                                        == user_id))


class FakeOutboxReader:
    def __init__(self) -> None:
        self.rows: list[tuple[int, bytes]] = []  # (partition, payload)
        self.queries = 0
        self.fail = False

    async def balance_changes(
        self, partitions: Sequence[int], window_s: float
    ) -> list[BalanceChange]:
        self.queries += 1
        if self.fail:
            raise ConnectionError("fake outbox is down")
        return decode_payloads([payload for partition, payload in self.rows
                                if partition in partitions])


class FakeSubscription:
    """A subscription fed by the test: `deliver`, `confirm` and `drop` act like the server."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Notice | BaseException] = asyncio.Queue()
        self.channels: list[str] = []
        self.opened = 0
        self.closed = 0

    async def open(self, channels: Sequence[str], *, refresh_topology: bool) -> None:
        self.opened += 1
        self.channels = list(channels)
        for channel in channels:
            self.queue.put_nowait(Notice(channel, None))

    async def receive(self) -> Notice:
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise SubscriptionLost(str(item)) from item
        return item

    async def close(self) -> None:
        self.closed += 1

    def deliver(self, channel: str, data: bytes) -> None:
        self.queue.put_nowait(Notice(channel, data))

    def drop(self) -> None:
        self.queue.put_nowait(ConnectionError("connection reset"))
