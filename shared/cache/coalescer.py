"""In-process request coalescing ("single flight"): concurrent callers of one key share a load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._flights

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The load's result and whether this caller joined someone else's load.

        The load runs in its own task: a caller that gives up (its RPC was cancelled) cancels only
        its own wait, not the load the other callers are waiting for.
        """
        task = self._flights.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(load())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task), joined

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone away
