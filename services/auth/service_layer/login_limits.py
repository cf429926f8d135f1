"""Where failed logins are counted: Redis while it answers, PostgreSQL while it does not.

Login keeps working through a Redis outage, and its brute-force limits hold throughout (they never
fail open):
- Redis answers: its counters decide (adapters/login_limiter.py).
- Redis fails or stops answering within its deadline, or the process's Redis circuit breaker is
  open: the same rules on counters in PostgreSQL (adapters/pg_login_limiter.py). PostgreSQL is
  needed for the login anyway (the credentials live there), so this adds no new way to fail.
- A reservation is released in the store that granted it.
- The two stores are not merged: attempts counted in one are not seen by the other. Around a
  switch (Redis goes away, or comes back) an attacker can use up each store's window once, so
  the limit is at most twice `login_max_failures` per window in the worst case (5 becomes 10
  guesses per 15 minutes for one email), and exact otherwise. Counting in both stores always
  would close that, at the price of a PostgreSQL write per login while Redis is healthy; a
  failover or an outage has to coincide with the attack for the gap to matter.
"""

from __future__ import annotations

import dataclasses
import logging

from services.auth.service_layer.ports import (
    AttemptReservation,
    LoginLimiter,
    LoginLimitsUnavailable,
)
from shared.cache.circuit_breaker import CircuitBreaker
from shared.errors import ResourceExhausted
from shared.metrics import REDIS_FALLBACKS

log = logging.getLogger(__name__)

_PRIMARY, _FALLBACK = "primary", "fallback"


class FallbackLoginLimiter:
    def __init__(self, primary: LoginLimiter, fallback: LoginLimiter,
                 breaker: CircuitBreaker) -> None:
        self._primary = primary
        self._fallback = fallback
        self._breaker = breaker

    async def reserve(self, email: str, client_address: str) -> AttemptReservation:
        if not self._breaker.allow_request():
            REDIS_FALLBACKS.labels("login_limit", "circuit_open").inc()
            return await self._reserve_in_fallback(email, client_address)
        try:
            reservation = await self._primary.reserve(email, client_address)
        except LoginLimitsUnavailable as err:
            self._breaker.record_failure()
            REDIS_FALLBACKS.labels("login_limit", "unavailable").inc()
            log.warning("login limits counted in PostgreSQL: Redis cannot count (%s)", err)
            return await self._reserve_in_fallback(email, client_address)
        except ResourceExhausted:
            self._breaker.record_success()  # a refusal is an answer
            raise
        self._breaker.record_success()
        return dataclasses.replace(reservation, store=_PRIMARY)

    async def release(self, reservation: AttemptReservation) -> None:
        if reservation.store == _FALLBACK:
            await self._fallback.release(reservation)
        else:
            await self._primary.release(reservation)

    async def _reserve_in_fallback(self, email: str, client_address: str) -> AttemptReservation:
        reservation = await self._fallback.reserve(email, client_address)
        return dataclasses.replace(reservation, store=_FALLBACK)
