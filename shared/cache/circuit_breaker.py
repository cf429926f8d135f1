"""A circuit breaker for the cache: after N consecutive failures it stops calling Redis (every read
goes straight to PostgreSQL instead of waiting for a timeout), and after `reset_after_s` it lets
one probe through; the probe's success closes it again, so it recovers by itself."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        reset_after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._threshold = failure_threshold
        self._reset_after_s = reset_after_s
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._since = 0.0  # when it opened, or when the half-open probe was let through

    @property
    def state(self) -> CircuitState:
        return self._state

    def allow_request(self) -> bool:
        if self._state is CircuitState.CLOSED:
            return True
        now = self._clock()
        # In HALF_OPEN a probe is in flight; if it never reports (its caller was cancelled), the
        # next one is let through after another reset period instead of staying stuck.
        if now - self._since >= self._reset_after_s:
            self._since = now
            self._set_state(CircuitState.HALF_OPEN)
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        if self._state is not CircuitState.CLOSED:
            self._set_state(CircuitState.CLOSED)

    def reset(self) -> None:
        """Closed again without waiting for a probe: whoever calls this knows that the cause of
        the failures is gone (the Redis client saw a node answer again, or a new topology)."""
        self.record_success()

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures >= self._threshold
        ):
            self._since = self._clock()
            self._set_state(CircuitState.OPEN)

    def _set_state(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_state_change is not None:
                self._on_state_change(state)
