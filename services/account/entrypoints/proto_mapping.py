"""Domain read models to protobuf messages."""

from __future__ import annotations

from bank.v1 import account_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from services.account.domain import AccountDetails, BalanceSnapshot, LedgerEntry, Loan
from shared.money import format_minor_units, money_message

_ACCOUNT_STATUS = {"open": account_pb2.ACCOUNT_STATUS_OPEN,
                   "closed": account_pb2.ACCOUNT_STATUS_CLOSED}
_LOAN_STATUS = {"active": account_pb2.LOAN_STATUS_ACTIVE, "repaid": account_pb2.LOAN_STATUS_REPAID}


def balance_message(snap: BalanceSnapshot, from_cache: bool) -> account_pb2.Balance:
    """The GetBalance reply (the hot path): the Money is filled in place, not built and copied."""
    reply = account_pb2.Balance(account_id=snap.account_id, version=snap.version,
                                source=source(from_cache))
    balance = reply.balance
    balance.minor_units = snap.minor_units
    balance.currency = snap.currency
    balance.formatted = format_minor_units(snap.minor_units, snap.currency)
    return reply


def timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def source(from_cache: bool) -> account_pb2.ReadSource:
    return account_pb2.READ_SOURCE_CACHE if from_cache else account_pb2.READ_SOURCE_DATABASE


def account_message(account: AccountDetails) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=account.account_id,
        owner_user_id=account.owner_user_id,
        name=account.name,
        currency=account.currency,
        balance=money_message(account.minor_units, account.currency),
        version=account.version,
        status=_ACCOUNT_STATUS.get(account.status, account_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        created_at=timestamp(account.created_us),
    )


def ledger_entry_message(account_id: str, currency: str,
                         entry: LedgerEntry) -> account_pb2.LedgerEntry:
    return account_pb2.LedgerEntry(
        entry_id=entry.entry_id,
        account_id=account_id,
        transfer_id=entry.transfer_id,
        amount=money_message(entry.amount, currency),
        balance_after=money_message(entry.balance_after, currency),
        counterparty_account_id=entry.counterparty_account_id,
        description=entry.description,
        created_at=timestamp(entry.created_us),
    )


def loan_message(loan: Loan) -> account_pb2.Loan:
    return account_pb2.Loan(
        loan_id=loan.loan_id,
        account_id=loan.account_id,
        principal=money_message(loan.principal, loan.currency),
        outstanding=money_message(loan.outstanding, loan.currency),
        interest_rate_bps=loan.interest_rate_bps,
        status=_LOAN_STATUS.get(loan.status, account_pb2.LOAN_STATUS_UNSPECIFIED),
        created_at=timestamp(loan.created_us),
    )
