"""The request gate every service runs before a call: session check, per-user rate limit and the
read-your-writes floor in ONE Lua call on the user's hash slot.

The token names the user before any lookup, so the session `session:{U}:S`, the user's limit
window `ratelimit:{U}:60s` and the floors `ryw:{U}` share a slot. The script, in order:
1. refuses a tombstone, an entry of another secret, or a session past its absolute lifetime;
   reports an entry past the recheck interval (or unreadable) so that PostgreSQL re-confirms it;
2. slides the idle expiry, only once the secret matched;
3. counts the request in the user's window, when it came through the edge (`x-bank-edge`), so
   an external request is counted once, however many internal calls it causes;
4. returns the floor of the requested account: the version of its last transfer by this user.
Python then verifies the entry's signature (shared/sessions.py). The secret's hash is compared
inside Redis in plain time: what it could leak is a prefix of a SHA-256, which tells nothing
about the secret.

Only sessions that exist get a limit window: a refused request writes nothing in Redis.

When Redis fails (error, timeout, open circuit) the gate degrades instead of failing: PostgreSQL
confirms the session, the limit falls back to a per-replica in-memory window (N replicas admit up
to N x the limit while Redis is away), and the floor is unknown: the caller is marked
`floors_unknown`, and the account service reads PostgreSQL for it. The same holds for
`FLOORS_UNSURE_S` after a Redis topology event (shared/redis_pipeline.py): a node that did not
answer failed the floor writes sent to it meanwhile (its slots); a lost primary (a failover, a
restart) may have lost floors, and until it was replaced the whole cluster refused writes
(CLUSTERDOWN: every slot). A floor matters only until its transfer's event is in the cache
(repaired, or published by the outbox relay). Refusals are remembered for a few seconds per
replica, so a flood of bad tokens does not become a flood of PostgreSQL queries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from shared.auth_context import Caller
from shared.cache.circuit_breaker import CircuitBreaker
from shared.config import Settings
from shared.errors import Unauthenticated
from shared.metrics import RATE_LIMITED, REDIS_FALLBACKS, SESSION_CHECKS
from shared.pg_pool import PoolType
from shared.rate_limit import (
    ADDRESS_SCOPE,
    FAILED_CHECKS_SCOPE,
    USER_SCOPE,
    InMemoryRateLimiter,
    LimitDecision,
    RateLimited,
)
from shared.redis_pipeline import ClusterPipeline, Script, TopologyEvent, slot_of_key
from shared.session_confirmation import SessionConfirmations
from shared.sessions import (
    ParsedToken,
    SessionEntrySigner,
    invalid_session,
    parse_token,
    recheck_interval_for,
    session_key,
)

log = logging.getLogger(__name__)

WINDOW_S = 60
_REFUSAL_MEMORY_S = 10.0
# After a topology event in a slot, the floors there are unsure: a failover or a restart may have
# lost some, a node that did not answer failed the floor writes sent meanwhile. A floor only
# matters until its transfer's event is in the cache; by then the account service has repaired
# the slots that lost writes and the relay has published what failed (rows 1.5 s old).
FLOORS_UNSURE_S = 10.0
_MAX_REMEMBERED_REFUSALS = 10_000

# Outcomes of USER_GATE (first element of its reply).
_ADMITTED, _UNVERIFIED, _REFUSED = 1, 2, 3

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
  redis.call('PEXPIRE', key, window_ms)
  -- When a slot frees matters only to a refused caller (Retry-After): one command less per
  -- admitted request.
  local reset = 0
  if allowed == 0 then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    reset = window_ms
    if oldest[2] then reset = tonumber(oldest[2]) + window_ms - now end
  end
  return {allowed, max - used, reset}
end
"""

# KEYS: session, user limit window, floors. ARGV: secret hash, idle ttl s, recheck s, absolute s,
# count ('1'/'0'), limit, window ms, member, account id ('' none), confirmed entry ('' none:
# check the cached one; else PostgreSQL just confirmed the session: write it unless revoked).
# Reply: {1, entry, allowed, remaining, reset ms, floor} | {2} re-confirm | {3} refused |
# {3, entry} an entry of another secret (refused if we signed it; a forged one must not lock
# anyone out, so PostgreSQL decides then).
USER_GATE = Script(_LIMIT_FUNCTION + """
local entry = redis.call('GET', KEYS[1])
if entry == 'revoked' then return {3} end
if ARGV[10] ~= '' then
  entry = ARGV[10]
  redis.call('SET', KEYS[1], entry, 'EX', ARGV[2])
else
  if not entry then return {2} end
  local hash, checked, created = string.match(entry, '^v2|(%x+)|(%d+)|(%d+)|%x+$')
  if not hash then return {2} end
  if hash ~= ARGV[1] then return {3, entry} end
  local now = tonumber(redis.call('TIME')[1])
  if now - tonumber(created) >= tonumber(ARGV[4]) then return {3} end
  if now - tonumber(checked) > tonumber(ARGV[3]) then return {2} end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local decision = {1, 0, 0}
if ARGV[5] == '1' then
  decision = limit(KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8])
end
local floor = false
if ARGV[9] ~= '' then floor = redis.call('HGET', KEYS[3], ARGV[9]) end
return {1, entry, decision[1], decision[2], decision[3], floor}
""")

ADDRESS_LIMIT = Script(_LIMIT_FUNCTION + """
return limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
""")

# Floors only move up: a slow reply of an older transfer cannot lower them. ARGV: ttl ms, then
# (account id, version) pairs.
REMEMBER_WRITES = Script("""
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
""")


def user_limit_key(user_id: str) -> str:
    return f"ratelimit:{{{user_id}}}:{WINDOW_S}s"


def address_limit_key(address: str) -> str:
    return f"ratelimit:{{ip:{address}}}:{WINDOW_S}s"


def floors_key(user_id: str) -> str:
    return f"ryw:{{{user_id}}}"


class SessionConfirmer(Protocol):
    """PostgreSQL's word on a session (shared/session_confirmation.py)."""

    async def confirm(self, token: ParsedToken) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Admission:
    caller: Caller
    floor: int  # read-your-writes: the reply must be at least this version (0: none known)
    limit: LimitDecision | None  # None when the request was not counted


@dataclass(frozen=True)
class GatePolicy:
    session_ttl_s: int
    absolute_ttl_s: int
    limit_per_minute: int
    floor_ttl_s: int
    # Failed session checks one client address may cause per minute, per replica.
    failed_checks_per_minute: int = 20


class FailedCheckQuota:
    """A small quota of failed session checks per client address, in this replica's memory: an
    address that keeps sending bad or revoked tokens (guessing, a stolen list) is refused for
    the rest of the window before any Redis or PostgreSQL work. Costs nothing while no address
    has failed. N replicas allow up to N x the quota; the per-address limit at the edge and the
    per-user limit bound the rest."""

    def __init__(self, per_minute: int) -> None:
        self._limiter = InMemoryRateLimiter(per_minute, WINDOW_S)
        self._per_minute = per_minute
        self.active = False

    def record(self, address: str) -> None:
        self.active = True
        self._limiter.check(address, FAILED_CHECKS_SCOPE)

    def peek(self, address: str) -> LimitDecision | None:
        """The refusal when the address has used up its quota, else None (counts nothing)."""
        decision = self._limiter.peek(address, FAILED_CHECKS_SCOPE)
        return decision if decision is not None and not decision.allowed else None


class RequestGate:
    def __init__(self, redis: ClusterPipeline, confirmer: SessionConfirmer,
                 signer: SessionEntrySigner, breaker: CircuitBreaker, policy: GatePolicy) -> None:
        self._redis = redis
        self._confirmer = confirmer
        self._signer = signer
        self._breaker = breaker
        self._policy = policy
        self._recheck_s = int(recheck_interval_for(policy.session_ttl_s))
        self._local_limits = InMemoryRateLimiter(policy.limit_per_minute, WINDOW_S)
        self._failed_checks = FailedCheckQuota(policy.failed_checks_per_minute)
        self._refused: dict[tuple[str, str, str], float] = {}
        # Members of a limit window must be unique across replicas and requests.
        self._member_prefix = secrets.token_hex(6) + ":"
        self._member_counter = itertools.count()
        self._outcomes = {name: SESSION_CHECKS.labels(name) for name in (
            "redis_hit", "confirmed", "redis_down", "refused")}
        # Slot -> until when the floors there are unsure (a topology event): callers whose
        # floors live there are admitted with `floors_unknown`.
        self._unsure_floors: dict[int, float] = {}
        self._all_unsure_until = 0.0
        self._unsure_until = 0.0
        redis.add_topology_listener(self._floors_unsure)

    async def warm_up(self) -> None:
        """Learn the layout and load the scripts before the first request, so that a first
        burst does not pay for it (or time out on it and open the circuit)."""
        try:
            for script in (USER_GATE, ADDRESS_LIMIT, REMEMBER_WRITES):
                await self._redis.load(script)
        except Exception as err:
            log.warning("Redis not reachable at start-up (%s: %s): sessions and limits fall back"
                        " until it is", type(err).__name__, err)

    async def admit(self, token: str, *, count: bool, account_id: str = "",
                    address: Callable[[], str] | None = None) -> Admission:
        """Check the session, count the request when `count`, and return the floor for
        `account_id`. Raises Unauthenticated, RateLimited, or Unavailable (PostgreSQL and Redis
        both unable to vouch for the session). `address` names the client (asked only when
        failures are being counted; the interceptor gives its group, an IPv6 /64 or an IPv4
        address, shared/call_metadata.py): an address past its quota of failed checks is
        refused before any Redis or PostgreSQL work."""
        if address is not None and self._failed_checks.active:
            decision = self._failed_checks.peek(address())
            if decision is not None:
                RATE_LIMITED.labels(FAILED_CHECKS_SCOPE).inc()
                raise RateLimited(decision)
        try:
            return await self._admit(token, count, account_id)
        except Unauthenticated:
            if address is not None:
                self._failed_checks.record(address())
            raise

    async def _admit(self, token: str, count: bool, account_id: str) -> Admission:
        parsed = parse_token(token)
        if self._recently_refused(parsed):
            raise invalid_session()
        reply = await self._check(parsed, count, account_id, b"")
        counted = False
        if reply is not None and reply[0] == _ADMITTED:
            entry = self._signer.decode(reply[1])
            if entry is not None:
                self._outcomes["redis_hit"].inc()
                return self._admission(parsed, count, reply)
            counted = count  # an entry we did not sign: PostgreSQL decides, count it once
        elif reply is not None and reply[0] == _REFUSED:
            if len(reply) == 1 or self._signer.decode(reply[1]) is not None:
                self._refuse(parsed)
        return await self._confirm(parsed, count and not counted, account_id,
                                   redis_down=reply is None)

    async def authenticate(self, token: str) -> Caller:
        """The session alone, the request not counted (internal callers that check a token)."""
        return (await self._admit(token, False, "")).caller

    async def admit_address(self, address: str) -> LimitDecision:
        """The per-address limit of the public calls (register, login)."""
        key = address_limit_key(address)
        reply = await self._run(ADDRESS_LIMIT, [key], [
            self._policy.limit_per_minute, WINDOW_S * 1000, self._next_member()])
        if reply is None:
            decision = self._local_limits.check(key, ADDRESS_SCOPE)
        else:
            allowed, remaining, reset_ms = reply
            decision = LimitDecision(bool(allowed), ADDRESS_SCOPE, self._policy.limit_per_minute,
                                     WINDOW_S, int(remaining), int(reset_ms))
        if not decision.allowed:
            RATE_LIMITED.labels(ADDRESS_SCOPE).inc()
            raise RateLimited(decision)
        return decision

    async def remember_writes(self, user_id: str, versions: Mapping[str, int]) -> None:
        """Raise the user's floors for these accounts (every session of the user reads at least
        these versions until the floors expire). Tried even while the breaker is open (other
        nodes failing must not skip a floor the user's node would take; a node known not to
        answer fails at once in the client). When it fails, the user's node did not answer:
        readers find it so too (or hear of its recovery) and read PostgreSQL."""
        if not versions:
            return
        args: list[Any] = [self._policy.floor_ttl_s * 1000]
        for account_id, version in versions.items():
            args.extend((account_id, version))
        await self._run(REMEMBER_WRITES, [floors_key(user_id)], args, skip_when_open=False)

    async def _check(self, parsed: ParsedToken, count: bool, account_id: str,
                     confirmed_entry: bytes) -> Any:
        policy = self._policy
        return await self._run(USER_GATE, [
            session_key(parsed.user_id, parsed.session_id), user_limit_key(parsed.user_id),
            floors_key(parsed.user_id),
        ], [
            parsed.secret_hash, policy.session_ttl_s, self._recheck_s, policy.absolute_ttl_s,
            "1" if count else "0", policy.limit_per_minute, WINDOW_S * 1000,
            self._next_member() if count else "", account_id, confirmed_entry,
        ])

    async def _confirm(self, parsed: ParsedToken, count: bool, account_id: str, *,
                       redis_down: bool) -> Admission:
        """PostgreSQL decides; a confirmed session's entry is written back to Redis."""
        created_at = await self._confirmer.confirm(parsed)
        if created_at is None:
            self._refuse(parsed)
        self._outcomes["redis_down" if redis_down else "confirmed"].inc()
        if not redis_down:
            entry = self._signer.encode(parsed.secret_hash, int(time.time()), created_at)
            reply = await self._check(parsed, count, account_id, entry)
            if reply is not None and reply[0] == _REFUSED:
                self._refuse(parsed)  # revoked meanwhile: the tombstone wins
            if reply is not None:
                return self._admission(parsed, count, reply)
        limit = None
        if count:
            limit = self._local_limits.check(user_limit_key(parsed.user_id), USER_SCOPE)
            if not limit.allowed:
                RATE_LIMITED.labels(USER_SCOPE).inc()
                raise RateLimited(limit)
        return Admission(Caller(parsed.user_id, parsed.session_id, floors_unknown=True), 0, limit)

    def _admission(self, parsed: ParsedToken, count: bool, reply: Any) -> Admission:
        _, _, allowed, remaining, reset_ms, floor = reply
        limit = None
        if count:
            limit = LimitDecision(bool(allowed), USER_SCOPE, self._policy.limit_per_minute,
                                  WINDOW_S, int(remaining), int(reset_ms))
            if not limit.allowed:
                RATE_LIMITED.labels(USER_SCOPE).inc()
                raise RateLimited(limit)
        return Admission(Caller(parsed.user_id, parsed.session_id,
                                floors_unknown=self._floors_unsure_for(parsed.user_id)),
                         int(floor) if floor else 0, limit)

    def _floors_unsure(self, event: TopologyEvent) -> None:
        until = time.monotonic() + FLOORS_UNSURE_S
        if event.writes_lost:
            # A primary was lost: until it was replaced the whole cluster answered CLUSTERDOWN,
            # so floor writes to every slot may have failed, not only to the lost one's.
            self._all_unsure_until = max(self._all_unsure_until, until)
        else:
            for slot in event.slots:
                self._unsure_floors[slot] = max(self._unsure_floors.get(slot, 0.0), until)
        self._unsure_until = max(self._unsure_until, until)

    def _floors_unsure_for(self, user_id: str) -> bool:
        if not self._unsure_until:
            return False
        now = time.monotonic()
        if now > self._unsure_until:
            self._unsure_floors.clear()
            self._unsure_until = 0.0
            return False
        if self._all_unsure_until > now:
            return True
        return self._unsure_floors.get(slot_of_key(floors_key(user_id)), 0.0) > now

    def _refuse(self, parsed: ParsedToken) -> NoReturn:
        self._outcomes["refused"].inc()
        if len(self._refused) >= _MAX_REMEMBERED_REFUSALS:
            now = time.monotonic()
            self._refused = {k: t for k, t in self._refused.items() if t > now}
            if len(self._refused) >= _MAX_REMEMBERED_REFUSALS:
                self._refused.clear()  # a flood of distinct tokens: forget rather than grow
        self._refused[(parsed.user_id, parsed.session_id, parsed.secret)] = (
            time.monotonic() + _REFUSAL_MEMORY_S)
        raise invalid_session()

    def _recently_refused(self, parsed: ParsedToken) -> bool:
        if not self._refused:
            return False
        until = self._refused.get((parsed.user_id, parsed.session_id, parsed.secret))
        return until is not None and until > time.monotonic()

    async def _run(self, script: Script, keys: list[str], args: list[Any], *,
                   skip_when_open: bool = True) -> Any:
        """The script's reply, or None when Redis cannot answer (the caller falls back)."""
        if skip_when_open and not self._breaker.allow_request():
            REDIS_FALLBACKS.labels("gate", "circuit_open").inc()
            return None
        try:
            reply = await self._redis.run(script, keys, args)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # any Redis failure degrades to the fallback, never an error
            self._breaker.record_failure()
            REDIS_FALLBACKS.labels("gate", type(err).__name__).inc()
            log.warning("redis call failed, falling back: %s: %s", type(err).__name__, err)
            return None
        self._breaker.record_success()
        return reply

    def _next_member(self) -> str:
        return self._member_prefix + str(next(self._member_counter))


def build_request_gate(settings: Settings, redis: ClusterPipeline, pool: PoolType,
                       breaker: CircuitBreaker) -> RequestGate:
    """The gate of a service process, from its settings (BANK_SESSION_SIGNING_KEY required)."""
    settings.require("session_signing_key")
    confirmer = SessionConfirmations(pool, settings.service_name,
                                     idle_ttl_s=settings.session_ttl_s,
                                     absolute_ttl_s=settings.session_absolute_ttl_s)
    policy = GatePolicy(
        session_ttl_s=settings.session_ttl_s,
        absolute_ttl_s=settings.session_absolute_ttl_s,
        limit_per_minute=settings.rate_limit_per_minute,
        floor_ttl_s=settings.read_your_writes_ttl_s,
        failed_checks_per_minute=settings.failed_session_checks_per_minute,
    )
    return RequestGate(redis, confirmer, SessionEntrySigner(settings.session_signing_key),
                       breaker, policy)
