"""The bounded retry around the one-statement transfer transaction."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from services.transfer.adapters import transfer_repository
from services.transfer.adapters.transfer_repository import with_retries
from shared.errors import Unavailable


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "committed"


async def test_deadlocks_and_serialization_failures_are_retried() -> None:
    operation = Flaky(psycopg.errors.DeadlockDetected("deadlock detected"),
                      psycopg.errors.SerializationFailure("could not serialize"))
    assert await with_retries(operation) == "committed"
    assert operation.calls == 3


async def test_retries_are_bounded_and_end_unavailable() -> None:
    attempts = transfer_repository.MAX_ATTEMPTS
    operation = Flaky(*(psycopg.errors.DeadlockDetected("again") for _ in range(attempts)))
    with pytest.raises(Unavailable):
        await with_retries(operation)
    assert operation.calls == attempts


@pytest.mark.parametrize("error", [PoolTimeout("no connection"),
                                   psycopg.OperationalError("server closed the connection"),
                                   psycopg.errors.QueryCanceled("statement timeout")])
async def test_an_unreachable_or_slow_database_is_unavailable_without_retry(
    error: Exception,
) -> None:
    operation = Flaky(error)
    with pytest.raises(Unavailable):
        await with_retries(operation)
    assert operation.calls == 1


async def test_other_database_errors_are_not_hidden() -> None:
    operation = Flaky(psycopg.errors.CheckViolation("balance would go negative"))
    with pytest.raises(psycopg.errors.CheckViolation):
        await with_retries(operation)
