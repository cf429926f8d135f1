"""What the facade returns: plain frozen values, no protobuf messages. Money is an integer count
of minor units and a currency, never a float; `formatted` is the server's decimal string."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cachebank_client.credentials import BearerToken


@dataclass(frozen=True, slots=True)
class Money:
    minor_units: int
    currency: str
    formatted: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.formatted or self.minor_units} {self.currency}"


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    amount: Money
    # The account version this balance was read at (pass it as min_version to read your write).
    version: int
    from_cache: bool


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: int
    account_id: str
    transfer_id: str
    amount: Money  # signed: negative for a debit
    balance_after: Money
    counterparty_account_id: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RecentTransactions:
    account_id: str
    entries: tuple[LedgerEntry, ...]
    version: int
    from_cache: bool


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    currency: str
    balance: Money
    version: int
    open: bool


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    from_account_id: str
    to_account_id: str
    amount: Money
    description: str
    idempotency_key: str
    created_at: datetime
    # The source account right after the transfer (only for its owner): read-your-writes.
    source_balance: Balance | None


@dataclass(frozen=True, slots=True)
class TransferPage:
    transfers: tuple[Transfer, ...]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    session_id: str
    expires_at: datetime
    token: str = field(repr=False)
    # Keep it on the device and pass it to the next login: while someone else's failed guesses
    # make the email wait between attempts, a login with it does not wait.
    device_token: str = field(default="", repr=False)

    def credentials(self) -> BearerToken:
        return BearerToken(self.token)
