"""Publishing balance-changed events on Redis sharded pub/sub, with their partition sequence
(the transfer service after commit, and the outbox relay). The channels and the partitioning
that the consumer shares are in shared/events.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from services.transfer.domain import OutboxEvent
from shared.events import channel_name, with_traceparent
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

# What the publisher sends: several events of one partition in one call, each published at
# most once. KEYS: the partition's sequence, channel and published set (one slot: the {p} tag).
# ARGV[1]: how long the published set remembers an outbox id (ms); then (outbox id, payload)
# pairs. An id already in the set is skipped, so a relay that repeats a publish the service made
# before it died (or before it confirmed the rows in PostgreSQL) sends nothing twice. Each
# message is exactly what PUBLISH_SCRIPT would publish, with consecutive sequence numbers in
# ARGV order; one INCRBY reserves the range. The set is scored by Redis' clock, and what is older
# than the memory is trimmed on every call. Returns how many were published now.
PUBLISH_BATCH_SCRIPT = _VARINT + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[1]))
local fresh = {}
for i = 2, #ARGV, 2 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) then fresh[#fresh + 1] = i end
end
if #fresh == 0 then return 0 end
local last = redis.call('INCRBY', KEYS[1], #fresh)
for j, i in ipairs(fresh) do
  redis.call('SPUBLISH', KEYS[2], ARGV[i + 1] .. '\\120' .. varint(last - #fresh + j))
  redis.call('ZADD', KEYS[3], now, ARGV[i])
end
return #fresh
"""

# How long the published sets remember an outbox id: far longer than the service takes to
# confirm its rows in PostgreSQL (outbox_confirm_interval_ms) plus the relay's minimum age, so a
# relay never repeats a publish while the rows wait for their confirmation. At 2,000 events/s
# the sets hold ~120,000 ids (~10 MB over the masters); an id forgotten earlier only means the
# relay may publish that event twice, which consumers absorb by version.
PUBLISHED_MEMORY_MS = 60_000


_PUBLISH_BATCH = Script(PUBLISH_BATCH_SCRIPT)


def sequence_key(partition: int) -> str:
    return f"events:seq:{{{partition}}}"


def published_key(partition: int) -> str:
    return f"events:published:{{{partition}}}"


class RedisEventPublisher:
    """Publishes serialized events on the Redis Cluster, with their partition sequence, once.

    A batch becomes one PUBLISH_BATCH_SCRIPT call per partition (events keep their order within
    a partition), sent through the pipelined client (shared/redis_pipeline.py): the calls made in
    one event-loop tick leave in one write per master, so a batch costs one round trip per master
    however many events it holds, and about a tenth of redis-py's client CPU per call (a cost
    every transfer paid while batches are small). That client also bounds every call by its
    deadline, follows MOVED, loads the script where a promoted replica does not know it
    (NOSCRIPT), and re-reads the slot layout when a master cannot be reached, so publishing
    resumes on the new master after a failover; one master down costs only its partitions.

    The returned ids are the events that are now out, whether this call or an earlier one sent
    them: their outbox rows can be confirmed. A failure is never raised: the events of a
    partition whose call failed are left out, their rows stay unconfirmed, and the relay
    delivers them.
    """

    def __init__(self, redis: ClusterPipeline, *, memory_ms: int = PUBLISHED_MEMORY_MS) -> None:
        self._redis = redis
        self._memory_ms = memory_ms

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if not events:
            return []
        by_partition: dict[int, list[OutboxEvent]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event)
        calls = []
        for partition, batch in by_partition.items():
            args: list[Any] = [self._memory_ms]
            for event in batch:
                args += (event.outbox_id, with_traceparent(event.payload, event.traceparent))
            keys = [sequence_key(partition), channel_name(partition), published_key(partition)]
            calls.append(self._redis.run(_PUBLISH_BATCH, keys, args))
        results = await asyncio.gather(*calls, return_exceptions=True)
        published, sent, failed = [], 0, None
        for batch, result in zip(by_partition.values(), results, strict=True):
            if isinstance(result, BaseException):
                failed = result
            else:
                published += [event.outbox_id for event in batch]
                sent += int(result)
        EVENTS.labels("published").inc(sent)
        if len(published) > sent:
            EVENTS.labels("already_published").inc(len(published) - sent)
        if failed is not None:
            EVENTS.labels("publish_failed").inc(len(events) - len(published))
            log.warning("publishing %d of %d events failed (%s: %s); the outbox relay will deliver"
                        " them", len(events) - len(published), len(events),
                        type(failed).__name__, failed)
        return published
