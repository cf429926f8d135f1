"""The account service's cache keys (docs/decisions.md) and how each read model is stored.

Every key carries the entity id as its hash tag, so one account's entries (and their leases)
share a slot and an event updates them in one Lua call.
"""

from __future__ import annotations

import json

from services.account.domain import (
    BalanceSnapshot,
    LedgerEntry,
    Loan,
    RecentTransactions,
    UserLoans,
)
from shared.cache import CacheEntry

BALANCE = "balance"
RECENT = "recent"
LOANS = "api_loans"


def balance_key(account_id: str) -> str:
    return f"account:{{{account_id}}}:balance"


def recent_key(account_id: str) -> str:
    return f"transactions:{{{account_id}}}:recent"


def loans_key(user_id: str) -> str:
    return f"api:{{{user_id}}}:loans"


def balance_data(currency: str, minor_units: int) -> bytes:
    """The data part of a balance entry; events write the same bytes (see APPLY_VERSION)."""
    return b"%s|%d" % (currency.encode(), minor_units)


class BalanceCodec:
    __slots__ = ("_account_id",)

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id

    def to_entry(self, value: BalanceSnapshot) -> CacheEntry:
        return CacheEntry(value.version, value.owner_user_id,
                          balance_data(value.currency, value.minor_units))

    def from_entry(self, entry: CacheEntry) -> BalanceSnapshot:
        currency, _, minor = entry.data.partition(b"|")
        return BalanceSnapshot(self._account_id, entry.owner, currency.decode(), int(minor),
                               entry.version)

    def version_of(self, value: BalanceSnapshot) -> int:
        return value.version


def _entry_row(entry: LedgerEntry) -> list[object]:
    return [entry.entry_id, entry.transfer_id, entry.amount, entry.balance_after,
            entry.counterparty_account_id, entry.description, entry.created_us]


class RecentTransactionsCodec:
    __slots__ = ("_account_id",)

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id

    def to_entry(self, value: RecentTransactions) -> CacheEntry:
        data = {"c": value.currency, "e": [_entry_row(e) for e in value.entries]}
        return CacheEntry(value.version, value.owner_user_id,
                          json.dumps(data, separators=(",", ":")).encode())

    def from_entry(self, entry: CacheEntry) -> RecentTransactions:
        data = json.loads(entry.data)
        entries = tuple(LedgerEntry(*row) for row in data["e"])
        return RecentTransactions(self._account_id, entry.owner, data["c"], entry.version,
                                  entries)

    def version_of(self, value: RecentTransactions) -> int:
        return value.version


class UserLoansCodec:
    """An API-response entry: loans carry no account version, so it is stored at version 0 and
    only filled when absent; it lives for its TTL (nothing in this system changes a loan)."""

    __slots__ = ()

    def to_entry(self, value: UserLoans) -> CacheEntry:
        rows = [[loan.loan_id, loan.account_id, loan.principal, loan.outstanding, loan.currency,
                 loan.interest_rate_bps, loan.status, loan.created_us] for loan in value.loans]
        return CacheEntry(0, value.user_id, json.dumps(rows, separators=(",", ":")).encode())

    def from_entry(self, entry: CacheEntry) -> UserLoans:
        return UserLoans(entry.owner, tuple(Loan(*row) for row in json.loads(entry.data)))

    def version_of(self, value: UserLoans) -> int:
        return 0
