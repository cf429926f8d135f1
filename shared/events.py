"""Balance-changed events: partitioning, channel names and the publish script.

Shared by the publishers (transfer service, outbox relay) and the consumer (account service).
"""

from __future__ import annotations

import zlib

from bank.v1 import events_pb2

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
