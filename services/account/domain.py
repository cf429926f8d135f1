"""Account read models. No I/O here.

Times are integer microseconds since the Unix epoch (PostgreSQL's resolution), so that cache
entries and pagination cursors carry them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BalanceSnapshot:
    """A balance as read at one account version; cache entries carry the same version."""

    account_id: str
    owner_user_id: str
    currency: str
    minor_units: int
    version: int


@dataclass(frozen=True, slots=True)
class AccountDetails:
    account_id: str
    owner_user_id: str
    name: str
    currency: str
    minor_units: int
    version: int
    status: str  # 'open' | 'closed'
    created_us: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: int
    transfer_id: str
    amount: int  # signed minor units: negative for a debit
    balance_after: int
    counterparty_account_id: str
    description: str
    created_us: int


@dataclass(frozen=True, slots=True)
class RecentTransactions:
    """The newest ledger entries of an account, read in one snapshot with its version."""

    account_id: str
    owner_user_id: str
    currency: str
    version: int
    entries: tuple[LedgerEntry, ...]


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account's balance and newest entries, both at one version (one statement)."""

    balance: BalanceSnapshot
    recent: RecentTransactions


@dataclass(frozen=True, slots=True)
class UserAccountIds:
    """The ids of a user's accounts: what a warm-up looks up before it looks at their entries
    (the `api:{user}:accounts` entry)."""

    user_id: str
    account_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TransactionsPage:
    account_id: str
    owner_user_id: str  # '' when the account does not exist
    currency: str
    entries: tuple[LedgerEntry, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Loan:
    loan_id: str
    account_id: str
    principal: int
    outstanding: int
    currency: str
    interest_rate_bps: int
    status: str  # 'active' | 'repaid'
    created_us: int


@dataclass(frozen=True, slots=True)
class UserLoans:
    """A user's loans: the unit of the `api:{user}:loans` response cache (no account version)."""

    user_id: str
    loans: tuple[Loan, ...]


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """What a balance-changed event tells the cache: the account is now at `version`, and
    (when the event carries it) `entry` is the ledger entry that made this version."""

    account_id: str
    version: int
    currency: str
    minor_units: int
    occurred_us: int  # 0 when unknown
    entry: LedgerEntry | None = None
    traceparent: str = ""  # the committing request's trace, when the event carries it


@dataclass(frozen=True, slots=True)
class PagePosition:
    """Keyset position: the last entry of a page, in (created_at, id) descending order."""

    account_id: str
    created_us: int
    entry_id: int


RECENT_TRANSACTIONS_LIMIT = 10
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
