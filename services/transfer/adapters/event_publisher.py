"""Publishing balance-changed events on Redis sharded pub/sub, with their partition sequence
(the transfer service after commit, and the outbox relay). The channels and the partitioning
that the consumer shares are in shared/events.py."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster

from services.transfer.domain import OutboxEvent
from shared.events import channel_name
from shared.metrics import EVENTS

log = logging.getLogger(__name__)

# Appends protobuf field 15 (partition_sequence, varint: tag byte 0x78) to the serialized event.
# Concatenating serialized fields is a documented protobuf merge, so consumers parse one typed
# message. INCR and SPUBLISH run atomically in the partition's slot, so sequence numbers are
# gap-free per partition in publish order, whichever replica publishes.
_VARINT = """
local function varint(n)
  local out = ''
  while n >= 128 do
    out = out .. string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  return out .. string.char(n)
end
"""

PUBLISH_SCRIPT = _VARINT + """
local seq = redis.call('INCR', KEYS[1])
redis.call('SPUBLISH', KEYS[2], ARGV[1] .. '\\120' .. varint(seq))
return seq
"""

# The same, for several events of one partition in one call (what the publisher sends): each
# message is exactly what PUBLISH_SCRIPT would publish, with consecutive sequence numbers, in
# ARGV order. One INCRBY reserves the range. Returns the last sequence number.
PUBLISH_BATCH_SCRIPT = _VARINT + """
local last = redis.call('INCRBY', KEYS[1], #ARGV)
for i = 1, #ARGV do
  redis.call('SPUBLISH', KEYS[2], ARGV[i] .. '\\120' .. varint(last - #ARGV + i))
end
return last
"""


def sequence_key(partition: int) -> str:
    return f"events:seq:{{{partition}}}"



class RedisEventPublisher:
    """Publishes serialized events on the Redis Cluster, with their partition sequence.

    A batch becomes one PUBLISH_BATCH_SCRIPT call per partition (events keep their order within
    a partition), all sent in one cluster pipeline: the client groups the calls by node, so a
    batch costs one round trip per master however many events it holds. EVAL, not EVALSHA: a
    promoted replica has an empty script cache, and Redis caches the compiled script by its body.

    A failure is never raised: the events of a partition whose call failed are left out of the
    returned ids, their outbox rows stay unpublished, and the relay delivers them.
    """

    def __init__(self, redis: RedisCluster) -> None:
        self._redis = redis

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if not events:
            return []
        by_partition: dict[int, list[OutboxEvent]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for partition, batch in by_partition.items():
                    pipe.eval(
                        PUBLISH_BATCH_SCRIPT, 2, sequence_key(partition), channel_name(partition),
                        *(event.payload for event in batch),
                    )
                results = await pipe.execute(raise_on_error=False)
        except Exception:
            log.warning("publishing %d events failed; the outbox relay will deliver them",
                        len(events), exc_info=True)
            EVENTS.labels("publish_failed").inc(len(events))
            return []
        published = [
            event.outbox_id
            for batch, result in zip(by_partition.values(), results, strict=True)
            if not isinstance(result, Exception)
            for event in batch
        ]
        EVENTS.labels("published").inc(len(published))
        if len(published) < len(events):
            EVENTS.labels("publish_failed").inc(len(events) - len(published))
        return published
