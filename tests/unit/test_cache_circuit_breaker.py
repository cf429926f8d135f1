"""The cache circuit breaker: opens after N failures, probes after the reset time, recovers."""

from __future__ import annotations

from shared.cache import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, reset_s: float = 2.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock = Clock()
    changes: list[str] = []
    breaker = CircuitBreaker(threshold, reset_s, clock=clock,
                             on_state_change=lambda s: changes.append(s.value))
    return breaker, clock, changes


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow_request()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow_request()
    assert changes == ["open"]


def test_one_probe_after_reset_and_success_closes() -> None:
    breaker, clock, changes = make(threshold=1, reset_s=2.0)
    breaker.record_failure()
    clock.now += 1.9
    assert not breaker.allow_request()
    clock.now += 0.2
    assert breaker.allow_request()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow_request()  # only one probe at a time
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow_request()
    assert changes == ["open", "half_open", "closed"]


def test_failed_probe_reopens_for_another_period() -> None:
    breaker, clock, _ = make(threshold=1, reset_s=2.0)
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    clock.now += 1.0
    assert not breaker.allow_request()
    clock.now += 1.0
    assert breaker.allow_request()


def test_a_probe_that_never_reports_does_not_wedge_the_breaker() -> None:
    breaker, clock, _ = make(threshold=1, reset_s=2.0)
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.allow_request()  # the probe's caller is cancelled and never reports
    clock.now += 2.0
    assert breaker.allow_request()
