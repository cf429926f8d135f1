"""Requests and replies of the facade's calls, shared by the sync and asyncio clients."""

from __future__ import annotations

import uuid
from datetime import UTC as _UTC

from bank.v1 import account_pb2, auth_pb2, common_pb2, transfer_pb2

from cachebank_client.credentials import CallCredentials, Metadata
from cachebank_client.models import (
    Account,
    Balance,
    LedgerEntry,
    Money,
    RecentTransactions,
    Session,
    Transfer,
    TransferPage,
)


def call_metadata(credentials: CallCredentials | None) -> Metadata:
    """The credentials' metadata and a request id (the services log it with every line)."""
    own = () if credentials is None else credentials.metadata()
    return (*own, ("x-request-id", uuid.uuid4().hex))


def transfer_request(from_account_id: str, to_account_id: str, amount: Money,
                     idempotency_key: str, description: str
                     ) -> transfer_pb2.CreateTransferRequest:
    if not idempotency_key.strip():
        raise ValueError("a transfer needs an idempotency key: generate one per transfer"
                         " (new_idempotency_key()) and reuse it when retrying that transfer")
    return transfer_pb2.CreateTransferRequest(
        from_account_id=from_account_id, to_account_id=to_account_id,
        amount=common_pb2.Money(minor_units=amount.minor_units, currency=amount.currency),
        idempotency_key=idempotency_key, description=description)


def money(proto: common_pb2.Money) -> Money:
    return Money(proto.minor_units, proto.currency, proto.formatted)


def balance(proto: account_pb2.Balance) -> Balance:
    return Balance(proto.account_id, money(proto.balance), proto.version,
                   proto.source == account_pb2.READ_SOURCE_CACHE)


def ledger_entry(proto: account_pb2.LedgerEntry) -> LedgerEntry:
    return LedgerEntry(proto.entry_id, proto.account_id, proto.transfer_id, money(proto.amount),
                       money(proto.balance_after), proto.counterparty_account_id,
                       proto.description, proto.created_at.ToDatetime(tzinfo=_UTC))


def recent(account_id: str, proto: account_pb2.ListRecentTransactionsResponse
           ) -> RecentTransactions:
    return RecentTransactions(account_id, tuple(ledger_entry(e) for e in proto.entries),
                              proto.version, proto.source == account_pb2.READ_SOURCE_CACHE)


def account(proto: account_pb2.Account) -> Account:
    return Account(proto.account_id, proto.name, proto.currency, money(proto.balance),
                   proto.version, proto.status == account_pb2.ACCOUNT_STATUS_OPEN)


def transfer(proto: transfer_pb2.Transfer) -> Transfer:
    source = balance(proto.source_balance) if proto.HasField("source_balance") else None
    return Transfer(proto.transfer_id, proto.from_account_id, proto.to_account_id,
                    money(proto.amount), proto.description, proto.idempotency_key,
                    proto.created_at.ToDatetime(tzinfo=_UTC), source)


def transfer_page(proto: transfer_pb2.ListTransfersResponse) -> TransferPage:
    return TransferPage(tuple(transfer(t) for t in proto.transfers), proto.next_page_token)


def session(proto: auth_pb2.LoginResponse) -> Session:
    return Session(proto.user_id, proto.session_id, proto.expires_at.ToDatetime(tzinfo=_UTC),
                   proto.token, proto.device_token)



