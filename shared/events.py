"""Balance-changed events as publisher (transfer) and consumer (account) both see them: the
outbox topic, the partitioning, the channel names and the payload's type
(`bank.v1.BalanceChanged`). The publishing itself is the transfer service's
(services/transfer/adapters/event_publisher.py)."""

from __future__ import annotations

import zlib

from bank.v1 import events_pb2

TOPIC_BALANCE_CHANGED = "balance_changed"


def partition_of(account_id: str, partitions: int) -> int:
    return zlib.crc32(account_id.encode()) % partitions


def channel_name(partition: int) -> str:
    return f"events:balance:{{{partition}}}"


def with_traceparent(payload: bytes, traceparent: str) -> bytes:
    """`payload` with the traceparent field set: serialized protobuf messages merge when
    concatenated, so the stored payload is not decoded again on the publishing path."""
    if not traceparent:
        return payload
    return payload + events_pb2.BalanceChanged(traceparent=traceparent).SerializeToString()


def decode_balance_changed(data: bytes) -> events_pb2.BalanceChanged:
    event = events_pb2.BalanceChanged()
    event.ParseFromString(data)
    return event
