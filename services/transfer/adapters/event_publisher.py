"""Publishing balance-changed events on Redis sharded pub/sub, with their partition sequence
(the transfer service after commit, and the outbox relay). The channels and the partitioning
that the consumer shares are in shared/events.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from services.transfer.domain import OutboxEvent
from shared.events import channel_name
from shared.metrics import EVENTS
from shared.redis_pipeline import ClusterPipeline, Script

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
_PUBLISH_BATCH = Script(PUBLISH_BATCH_SCRIPT)


def sequence_key(partition: int) -> str:
    return f"events:seq:{{{partition}}}"



class RedisEventPublisher:
    """Publishes serialized events on the Redis Cluster, with their partition sequence.

    A batch becomes one PUBLISH_BATCH_SCRIPT call per partition (events keep their order within
    a partition), all issued at once on the pipelined client (shared/redis_pipeline.py): the
    calls for one master leave in one write, so a batch costs one round trip per master however
    many events it holds. That client also bounds every call by its deadline, follows MOVED,
    loads the script where a promoted replica does not know it (NOSCRIPT), and re-reads the slot
    layout when a master cannot be reached, so publishing resumes on the new master after a
    failover. (redis-py's cluster pipeline did none of the last: a dead master's partitions
    failed every batch until the client happened to refresh its layout.)

    A failure is never raised: the events of a partition whose call failed are left out of the
    returned ids, their outbox rows stay unpublished, and the relay delivers them. One master
    down costs only its partitions.
    """

    def __init__(self, redis: ClusterPipeline) -> None:
        self._redis = redis

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if not events:
            return []
        by_partition: dict[int, list[OutboxEvent]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event)
        results = await asyncio.gather(
            *(self._redis.run(_PUBLISH_BATCH, [sequence_key(partition), channel_name(partition)],
                              [event.payload for event in batch])
              for partition, batch in by_partition.items()),
            return_exceptions=True,
        )
        published: list[int] = []
        failed: list[BaseException] = []
        for batch, result in zip(by_partition.values(), results, strict=True):
            if isinstance(result, BaseException):
                failed.append(result)
            else:
                published.extend(event.outbox_id for event in batch)
        EVENTS.labels("published").inc(len(published))
        if failed:
            EVENTS.labels("publish_failed").inc(len(events) - len(published))
            log.warning("publishing %d of %d events failed (%s: %s); the outbox relay will deliver"
                        " them", len(events) - len(published), len(events),
                        type(failed[0]).__name__, failed[0])
        return published
