"""The publisher appends the request's trace context to a stored event payload without decoding
it; the consumer reads it back with every other field intact."""

from __future__ import annotations

from bank.v1 import events_pb2

from shared.events import decode_balance_changed, with_traceparent

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_trace_context_joins_a_stored_payload() -> None:
    stored = events_pb2.BalanceChanged(account_id="a", version=7, outbox_id=9).SerializeToString()
    event = decode_balance_changed(with_traceparent(stored, TRACEPARENT))
    assert (event.account_id, event.version, event.outbox_id) == ("a", 7, 9)
    assert event.traceparent == TRACEPARENT


def test_without_a_trace_the_payload_is_unchanged() -> None:
    stored = events_pb2.BalanceChanged(account_id="a", version=7).SerializeToString()
    assert with_traceparent(stored, "") is stored
