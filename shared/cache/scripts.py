"""Lua compare-and-set scripts. Each runs atomically in one slot: the keys it touches share the
entity's hash tag, so a fill, a lease and an event update are each one round trip.

Ordering rule (the same in `fake_backend`):
- a value at version n replaces nothing newer: an absent entry, a value below n, a tombstone at or
  below n (a tombstone at n means "the value at n is not cached"; the value at n is fine);
- an event at version n replaces anything below n: a value keeps its owner and takes the event's
  data, anything else becomes a tombstone at n, which rejects every older fill.
"""

from __future__ import annotations

# KEYS[1] entry, KEYS[2] lease. ARGV[1] version, ARGV[2] encoded entry, ARGV[3] ttl ms,
# ARGV[4] lease token ('' if none). Returns 1 if written, 0 if rejected as stale. Releases the
# caller's lease in the same round trip, so waiting replicas see the fill and no lease together.
PUT_IF_NEWER = """
local ok = 1
local cur = redis.call('GET', KEYS[1])
if cur then
  local v, kind = string.match(cur, '^(%d+)|(%a)|')
  v = tonumber(v)
  local n = tonumber(ARGV[1])
  if v and ((kind == 't' and n < v) or (kind ~= 't' and n <= v)) then ok = 0 end
end
if ok == 1 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return ok
"""

# KEYS[1..n] entries of one entity. ARGV[1] version; then per key: mode ('u': keep the owner and
# set the data; 't': tombstone), data, value ttl ms, tombstone ttl ms. Returns per key 0 (stale:
# the entry is at or above the version), 1 (value updated) or 2 (tombstone written).
APPLY_VERSION = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local mode, data = ARGV[4 * i - 2], ARGV[4 * i - 1]
  local ttl, tombstone_ttl = ARGV[4 * i], ARGV[4 * i + 1]
  local cur = redis.call('GET', KEYS[i])
  local v, kind, owner
  if cur then
    v, kind, owner = string.match(cur, '^(%d+)|(%a)|([^|]*)|')
    v = tonumber(v)
  end
  if v and v >= n then
    out[i] = 0
  elseif mode == 'u' and kind == 'v' then
    redis.call('SET', KEYS[i], ARGV[1] .. '|v|' .. owner .. '|' .. data, 'PX', ttl)
    out[i] = 1
  else
    redis.call('SET', KEYS[i], ARGV[1] .. '|t||', 'PX', tombstone_ttl)
    out[i] = 2
  end
end
return out
"""

# KEYS[1] entry, KEYS[2] lease. ARGV[1] min version, ARGV[2] token, ARGV[3] lease ms.
# {1, entry} if a value at >= min version is cached (someone filled it meanwhile), {2} if the
# caller now holds the lease and should load, {3} if another loader holds it.
GET_OR_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v, kind = string.match(cur, '^(%d+)|(%a)|')
  if kind == 'v' and tonumber(v) >= tonumber(ARGV[1]) then return {1, cur} end
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
return {3}
"""

# KEYS[1] lease, ARGV[1] token: release only our own lease.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
