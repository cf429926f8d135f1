"""Balance-changed events: partitioning, channel names and the publish script.

Shared by the publishers (transfer service, outbox relay) and the consumer (account service).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from bank.v1 import events_pb2

from shared.metrics import EVENTS

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

log = logging.getLogger(__name__)

TOPIC_BALANCE_CHANGED = "balance_changed"

# Appends protobuf field 15 (partition_sequence, varint: tag byte 0x78) to the serialized event.
# Concatenating serialized fields is a documented protobuf merge, so consumers parse one typed
# message. INCR and SPUBLISH run atomically in the partition's slot, so sequence numbers are
# gap-free per partition in publish order, whichever replica publishes.
PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local n = seq
local out = ''
while n >= 128 do
  out = out .. string.char(n % 128 + 128)
  n = math.floor(n / 128)
end
out = out .. string.char(n)
redis.call('SPUBLISH', KEYS[2], ARGV[1] .. '\\120' .. out)
return seq
"""


class OutboxEvent(Protocol):
    """A committed outbox row: `payload` is a serialized BalanceChanged without its sequence."""

    @property
    def outbox_id(self) -> int: ...

    @property
    def partition(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


def partition_of(account_id: str, partitions: int) -> int:
    return zlib.crc32(account_id.encode()) % partitions


def channel_name(partition: int) -> str:
    return f"events:balance:{{{partition}}}"


def sequence_key(partition: int) -> str:
    return f"events:seq:{{{partition}}}"


def decode_balance_changed(data: bytes) -> events_pb2.BalanceChanged:
    event = events_pb2.BalanceChanged()
    event.ParseFromString(data)
    return event


class RedisEventPublisher:
    """Publishes serialized events through PUBLISH_SCRIPT on the Redis Cluster.

    One cluster pipeline per batch: the client groups the scripts by node and sends one request
    per master, so a batch of events costs one round trip per master, not one per event. EVAL
    (not EVALSHA) because a failed-over replica has an empty script cache, and Redis caches the
    compiled script by its body anyway.

    A failure is never raised: the outbox rows stay unpublished and the relay delivers them.
    """

    def __init__(self, redis: RedisCluster) -> None:
        self._redis = redis

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if not events:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.eval(
                        PUBLISH_SCRIPT, 2, sequence_key(event.partition),
                        channel_name(event.partition), event.payload,
                    )
                results = await pipe.execute(raise_on_error=False)
        except Exception:
            log.warning("publishing %d events failed; the outbox relay will deliver them",
                        len(events), exc_info=True)
            EVENTS.labels("publish_failed").inc(len(events))
            return []
        published = [
            event.outbox_id
            for event, result in zip(events, results, strict=True)
            if not isinstance(result, Exception)
        ]
        EVENTS.labels("published").inc(len(published))
        if len(published) < len(events):
            EVENTS.labels("publish_failed").inc(len(events) - len(published))
        return published
