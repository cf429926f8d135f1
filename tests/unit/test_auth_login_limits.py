"""Where failed logins are counted (service_layer/login_limits.py): Redis while it answers,
PostgreSQL while it does not, each reservation released where it was taken. Fakes for both
stores; the real ones are in tests/integration/test_login_limits_without_redis.py."""

from __future__ import annotations

import pytest

from services.auth.adapters.fakes import FakeLoginLimiter
from services.auth.service_layer.login_limits import FallbackLoginLimiter
from services.auth.service_layer.ports import AttemptReservation, LoginLimitsUnavailable
from shared.cache import CircuitBreaker, CircuitState
from shared.errors import ResourceExhausted


class SwitchableLimiter(FakeLoginLimiter):
    """The Redis limiter's rules, and `down` for an outage (nothing counted, an error)."""

    down: bool = False
    released: int = 0

    async def reserve(self, email: str, client_address: str) -> AttemptReservation:
        if self.down:
            raise LoginLimitsUnavailable("redis is down")
        return await super().reserve(email, client_address)

    async def release(self, reservation: AttemptReservation) -> None:
        self.released += 1
        await super().release(reservation)


@pytest.fixture
def stores() -> tuple[SwitchableLimiter, FakeLoginLimiter, FallbackLoginLimiter]:
    redis, postgres = SwitchableLimiter(max_failures=2), FakeLoginLimiter(max_failures=2)
    return redis, postgres, FallbackLoginLimiter(redis, postgres, CircuitBreaker(2, 60.0))


async def test_redis_counts_while_it_answers(
    stores: tuple[SwitchableLimiter, FakeLoginLimiter, FallbackLoginLimiter],
) -> None:
    redis, postgres, limits = stores
    await limits.reserve("a@example.com", "10.0.0.1")
    await limits.reserve("a@example.com", "10.0.0.2")
    with pytest.raises(ResourceExhausted):
        await limits.reserve("a@example.com", "10.0.0.3")
    assert postgres.counters == {}


async def test_postgres_counts_while_redis_is_away_and_holds_the_limit(
    stores: tuple[SwitchableLimiter, FakeLoginLimiter, FallbackLoginLimiter],
) -> None:
    redis, postgres, limits = stores
    redis.down = True
    first = await limits.reserve("a@example.com", "10.0.0.1")
    await limits.reserve("a@example.com", "10.0.0.2")
    with pytest.raises(ResourceExhausted):
        await limits.reserve("a@example.com", "10.0.0.3")
    assert postgres.counters["email:a@example.com"][0] == 2
    # The breaker opened after two failures: PostgreSQL answers without asking Redis first.
    assert limits._breaker.state is CircuitState.OPEN
    # A success releases where the slot was taken, even after Redis is back.
    redis.down = False
    await limits.release(first)
    assert postgres.counters["email:a@example.com"][0] == 1 and redis.released == 0


async def test_each_store_holds_its_own_window_across_a_switch(
    stores: tuple[SwitchableLimiter, FakeLoginLimiter, FallbackLoginLimiter],
) -> None:
    """The documented bound: not merged, so at most twice the limit around a switch."""
    redis, postgres, limits = stores
    for n in range(2):
        await limits.reserve("a@example.com", f"10.0.0.{n}")
    redis.down = True
    for n in range(2):
        await limits.reserve("a@example.com", f"10.0.1.{n}")
    with pytest.raises(ResourceExhausted):
        await limits.reserve("a@example.com", "10.0.2.1")
