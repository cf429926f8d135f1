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
    UserAccountIds,
    UserLoans,
)
from shared.cache import CacheEntry
from shared.cache.ordered_list import (
    OrderedItem,
    decode_ordered_list,
    encode_insertion,
    encode_ordered_list,
)

BALANCE = "balance"
RECENT = "recent"
LOANS = "api_loans"
ACCOUNTS = "api_accounts"


def balance_key(account_id: str) -> str:
    return f"account:{{{account_id}}}:balance"


def recent_key(account_id: str) -> str:
    return f"transactions:{{{account_id}}}:recent"


def loans_key(user_id: str) -> str:
    return f"api:{{{user_id}}}:loans"


def accounts_key(user_id: str) -> str:
    return f"api:{{{user_id}}}:accounts"


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


# The recent list is a shared.cache.ordered_list: header = the currency, one item per ledger
# entry, ordered by (created_us, entry_id) descending like the database query, so that a
# balance-changed event can insert its entry inside Redis (services/account/.../balance_events).
# An item is the JSON array of the entry's other fields (json.dumps escapes newlines).


def _ledger_item(entry: LedgerEntry) -> OrderedItem:
    rest = [entry.transfer_id, entry.amount, entry.balance_after,
            entry.counterparty_account_id, entry.description]
    return OrderedItem(entry.created_us, entry.entry_id,
                       json.dumps(rest, separators=(",", ":")).encode())


def _ledger_entry(item: OrderedItem) -> LedgerEntry:
    transfer_id, amount, balance_after, counterparty, description = json.loads(item.item)
    return LedgerEntry(item.secondary, transfer_id, amount, balance_after, counterparty,
                       description, item.primary)


def recent_insertion(currency: str, entry: LedgerEntry) -> bytes:
    """The data of the event update that inserts `entry` into the cached recent list."""
    return encode_insertion(currency.encode(), _ledger_item(entry))


class RecentTransactionsCodec:
    __slots__ = ("_account_id",)

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id

    def to_entry(self, value: RecentTransactions) -> CacheEntry:
        data = encode_ordered_list(value.currency.encode(),
                                   [_ledger_item(e) for e in value.entries])
        return CacheEntry(value.version, value.owner_user_id, data)

    def from_entry(self, entry: CacheEntry) -> RecentTransactions:
        if entry.data.startswith(b"{"):
            # Written by a replica before the ordered-list format (until its TTL ends).
            legacy = json.loads(entry.data)
            return RecentTransactions(self._account_id, entry.owner, legacy["c"], entry.version,
                                      tuple(LedgerEntry(*row) for row in legacy["e"]))
        decoded = decode_ordered_list(entry.data)
        if decoded is None:
            raise ValueError("not a recent-transactions list")
        currency, items = decoded
        return RecentTransactions(self._account_id, entry.owner, currency.decode(),
                                  entry.version, tuple(_ledger_entry(i) for i in items))

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


class UserAccountIdsCodec:
    """The ids of a user's accounts (a warm-up's index): like the loans, an API-response entry
    at version 0, filled when absent and living for its TTL. Ownership never changes; an account
    opened within the TTL is warmed once the entry expires (its reads fill it meanwhile)."""

    __slots__ = ()

    def to_entry(self, value: UserAccountIds) -> CacheEntry:
        return CacheEntry(0, value.user_id, ",".join(value.account_ids).encode())

    def from_entry(self, entry: CacheEntry) -> UserAccountIds:
        ids = tuple(entry.data.decode().split(",")) if entry.data else ()
        return UserAccountIds(entry.owner, ids)

    def version_of(self, value: UserAccountIds) -> int:
        return 0
