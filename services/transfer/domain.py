"""Transfers: the validated command, its outcomes, and the errors a client can see. No I/O here.

The rules that need the accounts (ownership, open accounts, one currency, funds, idempotency) run
inside PostgreSQL, in one statement: `adapters/sql/transfer_money.sql` is their live definition.
What it can answer is `RejectionReason` below, and each reason maps to one client error here.

Amounts are an integer count of minor units. A non-integer amount cannot reach this code: the
proto field is int64, and the gateway's JSON parsing rejects "10.5" for it (proto3 JSON mapping),
so "not an integer number of minor units" is an INVALID_ARGUMENT raised before any service runs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.errors import AlreadyExists, BankError, FailedPrecondition, InvalidArgument, NotFound
from shared.text_rules import normalize_free_text

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Treasury movements' keys (service_layer/treasury.py): reserved, customers' keys may not use it.
TREASURY_KEY_PREFIX = "treasury:"
MAX_DESCRIPTION_LENGTH = 500
_CURRENCY = re.compile(r"[A-Z]{3}")


class InvalidTransfer(InvalidArgument):
    """The request is malformed whatever the state of the accounts; nothing was stored."""


class AccountNotFound(NotFound):
    """Unknown account, or (for the source) one the caller does not own: the same answer for
    both, so that the error is no oracle for other users' account ids."""


class AccountClosed(FailedPrecondition):
    pass


class CurrencyMismatch(FailedPrecondition):
    pass


class InsufficientFunds(FailedPrecondition):
    pass


class IdempotencyKeyReused(AlreadyExists):
    """The key already belongs to a request with other parameters."""


class TransferNotFound(NotFound):
    pass


class RejectionReason(StrEnum):
    """Why `transfer_money` refused a transfer, checked in this order (a test holds this list to
    the SQL). Stored with the idempotency key in `transfer_rejections`, so a retry with the same
    key and parameters gets the same answer."""

    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    SOURCE_NOT_FOUND = "source_not_found"  # unknown, or not the caller's: no existence oracle
    DESTINATION_NOT_FOUND = "destination_not_found"
    SOURCE_CLOSED = "source_closed"
    DESTINATION_CLOSED = "destination_closed"
    SOURCE_CURRENCY_MISMATCH = "source_currency_mismatch"
    DESTINATION_CURRENCY_MISMATCH = "destination_currency_mismatch"
    INSUFFICIENT_FUNDS = "insufficient_funds"  # settlement accounts may go negative


@dataclass(frozen=True)
class TransferCommand:
    """A CreateTransfer request that passed validation (see `validate_transfer`)."""

    user_id: str
    idempotency_key: str
    from_account_id: str
    to_account_id: str
    amount: int
    currency: str
    description: str


@dataclass(frozen=True)
class OutboxEvent:
    """A committed outbox row to publish: a serialized bank.v1.BalanceChanged."""

    outbox_id: int
    partition: int
    payload: bytes
    # The committing request's trace context ('' when tracing is off or for relayed rows).
    traceparent: str = ""


@dataclass(frozen=True)
class SourceBalance:
    """The source account right after the transfer (read-your-writes for its owner)."""

    account_id: str
    minor_units: int
    currency: str
    version: int


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    user_id: str
    from_account_id: str
    to_account_id: str
    amount: int
    currency: str
    description: str
    idempotency_key: str
    created_at: datetime
    source_balance: SourceBalance | None


@dataclass(frozen=True)
class TransferOutcome:
    """What the database did: a new transfer (with events to publish), a replay of a stored one,
    or a rejection."""

    transfer: Transfer | None
    replayed: bool
    rejection: RejectionReason | None
    events: tuple[OutboxEvent, ...] = ()


def parse_id(raw: str, field: str) -> str:
    """Canonical UUID text, or INVALID_ARGUMENT naming the field."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidTransfer(f"{field} {raw[:64]!r} is not a valid id") from None


def validate_transfer(
    *,
    user_id: str,
    idempotency_key: str,
    from_account_id: str,
    to_account_id: str,
    amount: int,
    currency: str,
    description: str,
    max_amount: int,
) -> TransferCommand:
    """Checks that need no database. An idempotency key is required: without one a retry after a
    lost reply would move the money twice, which is the failure this service exists to prevent."""
    if not idempotency_key:
        raise InvalidTransfer("idempotency_key is required (send a unique key per transfer)")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH or not idempotency_key.isprintable():
        raise InvalidTransfer(
            f"idempotency_key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters"
        )
    source = parse_id(from_account_id, "from_account_id")
    destination = parse_id(to_account_id, "to_account_id")
    if source == destination:
        raise InvalidTransfer("from_account_id and to_account_id must differ")
    if amount <= 0:
        raise InvalidTransfer("amount must be a positive number of minor units")
    if amount > max_amount:
        raise InvalidTransfer(f"amount exceeds the maximum of {max_amount} minor units")
    if not _CURRENCY.fullmatch(currency):
        raise InvalidTransfer("amount.currency must be an ISO-4217 code such as 'EUR'")
    # Shown to both account holders: one spelling (NFC), nothing that reads differently from
    # what it is (shared/text_rules.py).
    description = normalize_free_text("description", description,
                                      max_length=MAX_DESCRIPTION_LENGTH)
    return TransferCommand(user_id, idempotency_key, source, destination, amount, currency,
                           description)


def parse_rejection(reason: str) -> RejectionReason:
    """A reason as stored by the database; one this release does not know (a row written by
    another version) is an internal error."""
    try:
        return RejectionReason(reason)
    except ValueError:
        raise BankError(f"transfer rejected for an unknown reason {reason!r}") from None


def rejection_error(reason: RejectionReason, command: TransferCommand) -> BankError:
    """The client-facing error for a rejection the database stored. Built from the request
    only, so a replayed rejection reads exactly like the first one."""
    source, destination = command.from_account_id, command.to_account_id
    match reason:
        case RejectionReason.IDEMPOTENCY_KEY_REUSED:
            return IdempotencyKeyReused(
                "this idempotency_key was already used for another request with different "
                "parameters; use a new key for a new transfer"
            )
        case RejectionReason.SOURCE_NOT_FOUND:
            return AccountNotFound(f"account {source} not found")
        case RejectionReason.DESTINATION_NOT_FOUND:
            return AccountNotFound(f"account {destination} not found")
        case RejectionReason.SOURCE_CLOSED:
            return AccountClosed(f"account {source} is closed")
        case RejectionReason.DESTINATION_CLOSED:
            return AccountClosed(f"account {destination} is closed")
        case RejectionReason.SOURCE_CURRENCY_MISMATCH:
            return CurrencyMismatch(f"account {source} does not hold {command.currency}")
        case RejectionReason.DESTINATION_CURRENCY_MISMATCH:
            return CurrencyMismatch(f"account {destination} does not hold {command.currency}")
        case RejectionReason.INSUFFICIENT_FUNDS:
            return InsufficientFunds(
                f"insufficient funds in account {source} for {command.amount} minor units"
            )
