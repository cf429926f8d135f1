"""Session check + rate limit (+ read-your-writes version) in ONE Redis round trip per request.

The token `<user_id>.<session_id>.<secret>` names the user before any lookup, so the session key
`session:{U}:S`, the limiter `ratelimit:{U}:60s` and the read-your-writes hash `ryw:{U}:S` share
the user's hash slot and one Lua script reads and updates all three atomically. Python then
compares the secret's SHA-256 with the stored one in constant time. Nothing is cached in the
gateway's memory, so a revocation (the `revoked` tombstone) is seen by the next request.

Every request that names a user counts against that user's limit, valid secret or not: guessing
secrets for a user is then throttled like any other traffic from that user.

When Redis fails (error, timeout, or the circuit is open): the session is validated by the auth
service's ValidateSession (PostgreSQL behind it), the limit falls back to a per-replica in-memory
limiter (fail open: N replicas admit up to N x the limit while Redis is down), and the
read-your-writes version is unknown (the account service reads PostgreSQL then anyway).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from services.gateway.errors import unauthenticated
from services.gateway.metrics import REDIS_FALLBACKS, SESSION_CHECKS
from shared.auth_context import Caller
from shared.errors import Unauthenticated
from shared.rate_limit import (
    ADDRESS_SCOPE,
    USER_SCOPE,
    InMemoryRateLimiter,
    LimitDecision,
)
from shared.redis_pipeline import ClusterPipeline as ClusterScripts, Script  # replaced by Envoy
from shared.sessions import REVOKED, ParsedToken, parse_token, secret_matches, session_key

log = logging.getLogger(__name__)

WINDOW_S = 60

# Sliding-window log: admitted requests are members of a sorted set scored by Redis' own clock
# (one clock for every replica). The key always gets a TTL of one window.
_LIMIT_FUNCTION = """
local function limit(key, max, window_ms, member)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
  local used = redis.call('ZCARD', key)
  local allowed = 0
  if used < max then
    redis.call('ZADD', key, now, member)
    used = used + 1
    allowed = 1
  end
  local reset = window_ms
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then reset = tonumber(oldest[2]) + window_ms - now end
  if used > 0 then redis.call('PEXPIRE', key, window_ms) end
  return {allowed, max - used, reset}
end
"""

# KEYS: session, limiter, read-your-writes hash. ARGV: session ttl s, limit, window ms, member,
# account id whose remembered version is wanted ('' for none).
USER_CHECK_SCRIPT = Script(_LIMIT_FUNCTION + """
local session = redis.call('GET', KEYS[1])
if session and session ~= 'revoked' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local decision = limit(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
local version = false
if ARGV[5] ~= '' then version = redis.call('HGET', KEYS[3], ARGV[5]) end
return {session, decision[1], decision[2], decision[3], version}
""")

ADDRESS_CHECK_SCRIPT = Script(_LIMIT_FUNCTION + """
return limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
""")

# Versions only move forward: a slow reply of an older transfer cannot lower the floor.
REMEMBER_WRITE_SCRIPT = Script("""
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""")


def user_limit_key(user_id: str) -> str:
    return f"ratelimit:{{{user_id}}}:{WINDOW_S}s"


def address_limit_key(address: str) -> str:
    return f"ratelimit:{{ip:{address}}}:{WINDOW_S}s"


def read_your_writes_key(user_id: str, session_id: str) -> str:
    return f"ryw:{{{user_id}}}:{session_id}"


class SessionValidator(Protocol):
    """The durable check behind Redis (the auth service's ValidateSession)."""

    async def validate_session(self, token: str) -> Caller: ...


@dataclass(frozen=True, slots=True)
class GateResult:
    caller: Caller
    limit: LimitDecision
    min_version: int


class CircuitBreaker:
    """After `threshold` failures in a row, skip Redis for `reset_s`, then let one call probe."""

    def __init__(self, threshold: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = threshold
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    def allow(self) -> bool:
        if self._failures < self._threshold:
            return True
        now = self._clock()
        if now >= self._open_until:
            self._open_until = now + self._reset_s  # this caller probes; others wait
            return True
        return False

    def success(self) -> None:
        self._failures = 0

    def failure(self) -> None:
        self._failures += 1
        if self._failures == self._threshold:
            self._open_until = self._clock() + self._reset_s


class SessionGate:
    def __init__(
        self,
        scripts: ClusterScripts,
        validator: SessionValidator,
        *,
        limit_per_minute: int,
        session_ttl_s: int,
        read_your_writes_ttl_s: int,
        breaker: CircuitBreaker,
    ) -> None:
        self._scripts = scripts
        self._validator = validator
        self._limit = limit_per_minute
        self._session_ttl_s = session_ttl_s
        self._ryw_ttl_ms = read_your_writes_ttl_s * 1000
        self._breaker = breaker
        self._fallback_limiter = InMemoryRateLimiter(limit_per_minute, WINDOW_S)
        # Members of the limiter's sorted set must be unique across replicas and requests.
        self._member_prefix = secrets.token_hex(6) + ":"
        self._member_counter = itertools.count()

    async def warm_up(self) -> None:
        """Learn the cluster's topology and load the scripts before the first request, so that a
        first burst does not pay for it (or time out on it, which would count as an outage)."""
        try:
            for script in (USER_CHECK_SCRIPT, ADDRESS_CHECK_SCRIPT, REMEMBER_WRITE_SCRIPT):
                await self._scripts.load(script)
        except Exception as err:
            log.warning("Redis not reachable at start-up (%s: %s): sessions and limits fall back"
                        " until it is", type(err).__name__, err)

    async def check_session(self, token: str, account_id: str | None) -> GateResult:
        try:
            parsed = parse_token(token)
        except Unauthenticated as err:
            raise unauthenticated(err.message) from None
        reply = await self._run(
            USER_CHECK_SCRIPT,
            [session_key(parsed.user_id, parsed.session_id), user_limit_key(parsed.user_id),
             read_your_writes_key(parsed.user_id, parsed.session_id)],
            [self._session_ttl_s, self._limit, WINDOW_S * 1000, self._next_member(),
             account_id or ""],
        )
        if reply is None:
            caller = await self._validate_durably(token, "redis_down")
            limit = self._fallback_limiter.check(user_limit_key(parsed.user_id), USER_SCOPE)
            return GateResult(caller, limit, 0)
        stored, allowed, remaining, reset_ms, version = reply
        caller = await self._verify(token, parsed, stored)
        limit = LimitDecision(bool(allowed), USER_SCOPE, self._limit, WINDOW_S, int(remaining),
                              int(reset_ms))
        return GateResult(caller, limit, int(version) if version else 0)

    async def check_address(self, address: str) -> LimitDecision:
        key = address_limit_key(address)
        reply = await self._run(ADDRESS_CHECK_SCRIPT, [key],
                                [self._limit, WINDOW_S * 1000, self._next_member()])
        if reply is None:
            return self._fallback_limiter.check(key, ADDRESS_SCOPE)
        allowed, remaining, reset_ms = reply
        return LimitDecision(bool(allowed), ADDRESS_SCOPE, self._limit, WINDOW_S,
                             int(remaining), int(reset_ms))

    async def remember_write(self, caller: Caller, account_id: str, version: int) -> None:
        await self._run(REMEMBER_WRITE_SCRIPT,
                        [read_your_writes_key(caller.user_id, caller.session_id)],
                        [account_id, version, self._ryw_ttl_ms])

    async def _verify(self, token: str, parsed: ParsedToken, stored: bytes | None) -> Caller:
        if stored is None:
            # Not in Redis (evicted, flushed, failed over): PostgreSQL decides, and refills it.
            return await self._validate_durably(token, "redis_miss")
        if stored == REVOKED:
            SESSION_CHECKS.labels("revoked").inc()
            raise unauthenticated()
        stored_hash, _, _touched = stored.partition(b"|")
        if not secret_matches(stored_hash, parsed.secret):
            SESSION_CHECKS.labels("bad_secret").inc()
            raise unauthenticated()
        SESSION_CHECKS.labels("redis_hit").inc()
        return Caller(parsed.user_id, parsed.session_id)

    async def _validate_durably(self, token: str, why: str) -> Caller:
        SESSION_CHECKS.labels(why).inc()
        try:
            return await self._validator.validate_session(token)
        except Unauthenticated as err:
            raise unauthenticated(err.message) from None

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, or None when Redis cannot answer (the caller falls back)."""
        if not self._breaker.allow():
            REDIS_FALLBACKS.labels("circuit_open").inc()
            return None
        try:
            reply = await self._scripts.run(script, keys, args)
        except Exception as err:  # any Redis failure degrades to the fallback, never a 500
            self._breaker.failure()
            REDIS_FALLBACKS.labels(type(err).__name__).inc()
            log.warning("redis call failed, falling back: %s: %s", type(err).__name__, err)
            return None
        self._breaker.success()
        return reply

    def _next_member(self) -> str:
        return self._member_prefix + str(next(self._member_counter))
