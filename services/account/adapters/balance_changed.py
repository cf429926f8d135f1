"""`bank.v1.BalanceChanged` (protos/bank/v1/events.proto) as the account service reads it: one
decoding for live messages (entrypoints/event_consumer.py) and outbox rows (outbox_reader.py)."""

from __future__ import annotations

from bank.v1 import events_pb2
from google.protobuf import timestamp_pb2

from services.account.domain import BalanceChange, LedgerEntry


def _micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def _ledger_entry(event: events_pb2.BalanceChanged) -> LedgerEntry | None:
    """The event's ledger entry, if it carries one for its own account."""
    if not event.HasField("entry") or event.entry.account_id != event.account_id:
        return None
    entry = event.entry
    return LedgerEntry(entry.entry_id, entry.transfer_id, entry.amount.minor_units,
                       entry.balance_after.minor_units, entry.counterparty_account_id,
                       entry.description, _micros(entry.created_at))


def change_from_event(event: events_pb2.BalanceChanged) -> BalanceChange:
    occurred_us = _micros(event.occurred_at) if event.HasField("occurred_at") else 0
    return BalanceChange(event.account_id, event.version, event.balance.currency,
                         event.balance.minor_units, occurred_us, _ledger_entry(event),
                         event.traceparent)
