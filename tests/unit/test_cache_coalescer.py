"""In-process single flight."""

from __future__ import annotations

import asyncio

import pytest

from shared.cache.coalescer import SingleFlight


async def test_concurrent_callers_share_one_load() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    loads = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        await release.wait()
        return 7

    tasks = [asyncio.create_task(flights.run("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    assert flights.in_flight("k")
    release.set()
    results = await asyncio.gather(*tasks)
    assert loads == 1
    assert [value for value, _ in results] == [7] * 50
    assert sum(joined for _, joined in results) == 49
    assert not flights.in_flight("k")


async def test_errors_reach_every_waiter_and_the_next_call_loads_again() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def broken() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("db down")

    results = await asyncio.gather(*(flights.run("k", broken) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)

    async def healthy() -> int:
        return 1

    assert await flights.run("k", healthy) == (1, False)


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def load() -> int:
        await asyncio.sleep(0.05)
        return 3

    first = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    second = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == (3, True)
