"""Rate-limit decisions, their HTTP headers, and the per-replica limiter used when Redis is down.

The limit is a sliding window (a log of admitted request times): "100 requests in any 60 s", with
no burst of 2x at a fixed window's edge. The shared limiter is the Lua script in request_gate;
this module only holds what does not touch Redis.

Headers follow draft-ietf-httpapi-ratelimit-headers (-10): `RateLimit-Policy: "user";q=100;w=60`
and `RateLimit: "user";r=<remaining>;t=<seconds until a slot frees>`, plus `Retry-After` on 429.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import ResourceExhausted

USER_SCOPE = "user"
ADDRESS_SCOPE = "address"
FAILED_CHECKS_SCOPE = "failed_checks"
_MAX_TRACKED_KEYS = 20_000


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    scope: str
    limit: int
    window_s: int
    remaining: int
    reset_ms: int

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.reset_ms / 1000))

    def headers(self) -> list[tuple[str, str]]:
        """The response headers (sent as gRPC metadata, which Envoy turns into headers)."""
        out = [
            ("ratelimit-policy", f'"{self.scope}";q={self.limit};w={self.window_s}'),
            ("ratelimit", f'"{self.scope}";r={self.remaining};t={self.retry_after_s}'),
        ]
        if not self.allowed:
            out.append(("retry-after", str(self.retry_after_s)))
        return out


class RateLimited(ResourceExhausted):
    """Over a request limit: RESOURCE_EXHAUSTED carrying the decision's headers."""

    def __init__(self, decision: LimitDecision) -> None:
        super().__init__(
            f"rate limit of {decision.limit} requests per {decision.window_s} s exceeded;"
            f" retry in {decision.retry_after_s} s",
            decision.retry_after_s,
        )
        self.decision = decision


class InMemoryRateLimiter:
    """Sliding-window log per key, for one replica only: the fallback while Redis is unreachable.

    Failing open to this keeps the API up when the cache tier is down; the cost is that N
    replicas together admit up to N times the limit during the outage (docs/architecture.md,
    Failure behaviour).
    """

    def __init__(self, limit: int, window_s: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}

    def check(self, key: str, scope: str) -> LimitDecision:
        now = self._clock()
        window_start = now - self._window_s
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= _MAX_TRACKED_KEYS:
                self._evict(window_start)
            log = self._logs[key] = deque()
        while log and log[0] <= window_start:
            log.popleft()
        allowed = len(log) < self._limit
        if allowed:
            log.append(now)
        reset_ms = int((log[0] + self._window_s - now) * 1000) if log else self._window_s * 1000
        return LimitDecision(allowed, scope, self._limit, self._window_s,
                             self._limit - len(log), max(reset_ms, 1))

    def peek(self, key: str, scope: str) -> LimitDecision | None:
        """The key's state without counting a request; None when it has no request in the
        window."""
        log = self._logs.get(key)
        if not log:
            return None
        now = self._clock()
        while log and log[0] <= now - self._window_s:
            log.popleft()
        if not log:
            return None
        reset_ms = int((log[0] + self._window_s - now) * 1000)
        return LimitDecision(len(log) < self._limit, scope, self._limit, self._window_s,
                             self._limit - len(log), max(reset_ms, 1))

    def _evict(self, window_start: float) -> None:
        stale = [key for key, log in self._logs.items() if not log or log[-1] <= window_start]
        for key in stale:
            del self._logs[key]
        if len(self._logs) >= _MAX_TRACKED_KEYS:
            self._logs.clear()  # under a flood of distinct keys, forget rather than grow
