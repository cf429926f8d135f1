"""Failed-login limits in Redis, per email and per client address, shared by all replicas.

Each attempt reserves a slot in both counters *before* the password is checked (one Lua call per
counter: check, INCR and the window's expiry together), and a successful attempt gives its slot
back. Counting before checking means that N parallel guesses cannot all slip past a counter that
only moved after their verifications: at most `max_failures` attempts are ever in flight or
failed per window. The window is fixed, starting at the first counted attempt.

Redis unavailable (an error, or no answer within the pipelined client's deadline): this adapter
raises `LoginLimitsUnavailable`, and the service layer counts in PostgreSQL instead
(service_layer/login_limits.py, adapters/pg_login_limiter.py). It never fails open.

The email is hashed in the key: no addresses in Redis dumps. The counters are keyed by the
email even when no such user exists, so the limiter says nothing about who is registered.
"""

from __future__ import annotations

import asyncio
import hashlib
import math

from services.auth.service_layer.ports import AttemptReservation, LoginLimitsUnavailable
from shared.errors import ResourceExhausted
from shared.redis_pipeline import ClusterPipeline, Script

# KEYS[1] counter; ARGV max, window ms. Returns {1, 0} when a slot was taken, {0, ms left} when
# the window is used up.
_RESERVE = Script("""
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {0, left}
end
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, 0}
""")
# Give a slot back, never below zero and never creating a key (the window may have ended).
_RELEASE = Script("""
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
""")


def email_counter_key(email: str) -> str:
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]
    return f"ratelimit:{{login-email:{digest}}}:failures"


def address_counter_key(client_address: str) -> str:
    return f"ratelimit:{{login-addr:{client_address[:64]}}}:failures"


class RedisLoginLimiter:
    def __init__(self, redis: ClusterPipeline, max_failures: int, window_s: int) -> None:
        self._redis = redis
        self._max = max_failures
        self._window_ms = window_s * 1000

    async def reserve(self, email: str, client_address: str) -> AttemptReservation:
        keys = counter_keys(email, client_address)
        # The two counters live in different slots (different masters): two calls, in parallel,
        # so that the latency is one round trip.
        results = await asyncio.gather(
            *(self._redis.run(_RESERVE, [key], [self._max, self._window_ms]) for key in keys),
            return_exceptions=True,
        )
        granted = tuple(k for k, r in zip(keys, results, strict=True)
                        if not isinstance(r, BaseException) and int(r[0]) == 1)
        errors = [r for r in results if isinstance(r, BaseException)]
        refusals = [int(r[1]) for r in results
                    if not isinstance(r, BaseException) and int(r[0]) == 0]
        if errors or refusals:
            await self.release(AttemptReservation(granted))
            if errors:
                raise LoginLimitsUnavailable(f"{type(errors[0]).__name__}: {errors[0]}")
            raise too_many_attempts(max(refusals))
        return AttemptReservation(granted)

    async def release(self, reservation: AttemptReservation) -> None:
        if reservation.keys:
            # Best effort: a slot not given back only costs the user one attempt of the window.
            await asyncio.gather(*(self._redis.run(_RELEASE, [key], [])
                                   for key in reservation.keys), return_exceptions=True)


def counter_keys(email: str, client_address: str) -> list[str]:
    keys = [email_counter_key(email)]
    if client_address:
        keys.append(address_counter_key(client_address))
    return keys


def too_many_attempts(ms_left: int) -> ResourceExhausted:
    retry_after_s = max(1, math.ceil(ms_left / 1000))
    return ResourceExhausted(
        f"too many failed login attempts; try again in {retry_after_s} s", retry_after_s
    )
