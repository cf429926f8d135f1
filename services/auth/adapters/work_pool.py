"""A bounded pool of worker threads for CPU-heavy work (argon2), refusing at once when full.

argon2 runs in threads (its C code releases the GIL) so that the event loop keeps serving. Each
pool has its own threads: with one shared executor (asyncio.to_thread's), a flood of
registrations would fill the queue in front of every login. And each pool admits at most
`workers + queue` calls: beyond that a call is answered UNAVAILABLE (HTTP 503 through the
gateway) without waiting, because a request that would queue for seconds behind a flood is better
retried by the client (or another replica) than held, with its memory and its deadline ticking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from shared.errors import Unavailable
from shared.metrics import HASH_POOL_REFUSALS

T = TypeVar("T")


class BoundedWorkPool:
    def __init__(self, name: str, workers: int, queue: int) -> None:
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers),
                                            thread_name_prefix=f"argon2-{name}")
        self._capacity = max(1, workers) + max(0, queue)
        self._admitted = 0  # running or queued; only the event loop's thread touches it
        self._refusals = HASH_POOL_REFUSALS.labels(name)

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, work: Callable[..., T], *args: object) -> T:
        if self._admitted >= self._capacity:
            self._refusals.inc()
            raise Unavailable(f"the server is busy with {self._name} requests; try again shortly")
        loop = asyncio.get_running_loop()
        self._admitted += 1
        future = self._executor.submit(work, *args)
        # Counted until the thread is done with it, not until the caller stops waiting: a
        # cancelled call whose hash is already running still holds its worker and its memory.
        def finished(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(self._finished)

        future.add_done_callback(finished)
        return await asyncio.wrap_future(future, loop=loop)

    def _finished(self) -> None:
        self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
