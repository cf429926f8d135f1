"""Lua compare-and-set scripts. Each runs atomically in one slot: the keys it touches share the
entity's hash tag, so a fill, a lease and an event update are each one round trip.

Ordering rule (the same in `fake_backend`):
- a value at version n replaces nothing newer: an absent entry, a value below n, a tombstone at or
  below n (a tombstone at n means "the value at n is not cached"; the value at n is fine);
- an event at version n replaces anything below n: a value keeps its owner and takes the event's
  data (or, for a list, gains the event's item if it was at exactly n - 1), anything else
  becomes a tombstone at n, which rejects every older fill.
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

# KEYS[1..n] entries of one entity. ARGV[1] version; then per key: mode, data, value ttl ms,
# tombstone ttl ms, keep. Modes: 'u' keep the owner and set the data; 't' tombstone; 'i' insert
# the item of `data` (an ordered_list insertion) into the cached list and keep its newest `keep`
# items, but only onto a value at exactly version - 1: a list one step behind is that list plus
# this change, while from any other state (older, missing, a tombstone) it would skip a change,
# so it becomes a tombstone. Returns per key 0 (stale: the entry is at or above the version),
# 1 (value updated) or 2 (tombstone written).
# Order keys are compared as Lua numbers: exact below 2^53 (µs timestamps, row ids).
APPLY_VERSION = """
local function order_key(line)
  local p, s = string.match(line, '^(%d+),(%d+),')
  if p then return tonumber(p), tonumber(s) end
end
local function insert_item(list, insertion, keep)
  local cut = string.find(insertion, '\\n', 1, true)
  if not cut then return nil end
  local header, new = string.sub(insertion, 1, cut - 1), string.sub(insertion, cut + 1)
  local np, ns = order_key(new)
  if not np or string.find(new, '\\n', 1, true) then return nil end
  local lines = {}
  for line in string.gmatch(list .. '\\n', '([^\\n]*)\\n') do lines[#lines + 1] = line end
  if lines[1] ~= header then return nil end
  local out, placed = {header}, false
  for j = 2, #lines do
    local p, s = order_key(lines[j])
    if not p or (p == np and s == ns) then return nil end
    if not placed and (p < np or (p == np and s < ns)) then
      out[#out + 1] = new
      placed = true
    end
    out[#out + 1] = lines[j]
  end
  if not placed then out[#out + 1] = new end
  while #out > keep + 1 do out[#out] = nil end
  return table.concat(out, '\\n')
end

local n = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local at = 5 * i - 3
  local mode, data = ARGV[at], ARGV[at + 1]
  local ttl, tombstone_ttl, keep = ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
  local cur = redis.call('GET', KEYS[i])
  local v, kind, owner, body
  if cur then
    v, kind, owner, body = string.match(cur, '^(%d+)|(%a)|([^|]*)|(.*)$')
    v = tonumber(v)
  end
  local list
  if mode == 'i' and kind == 'v' and v == n - 1 then list = insert_item(body, data, keep) end
  if v and v >= n then
    out[i] = 0
  elseif mode == 'u' and kind == 'v' then
    redis.call('SET', KEYS[i], ARGV[1] .. '|v|' .. owner .. '|' .. data, 'PX', ttl)
    out[i] = 1
  elseif list then
    redis.call('SET', KEYS[i], ARGV[1] .. '|v|' .. owner .. '|' .. list, 'PX', ttl)
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
