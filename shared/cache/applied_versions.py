"""Where a reader waits for the event consumer instead of going to the database.

A read right after a transfer asks for `min_version` newer than the cached entry while the
balance-changed event is still in flight (the transfer service publishes a few ms after commit).
The consumer records every version it applies to the cache; a reader that found an older entry
waits here, briefly, for the entity to reach its version, then reads the cache again. Every
replica consumes every partition, so the wait is in-process: no Redis call until it is answered.

The same memory keeps the read path from serving what an event has passed: a cached entry older
than a version this replica has applied is stale even if it looks fine, because the event's own
write was lost (a Redis failover loses acknowledged writes). Such a read goes to PostgreSQL, and
its fill puts the newer version back.

Nothing else rests on it: a reader re-checks the entry's version after the wait (a recorded
version says the cache was written, not that it still holds the entry), and a wait that times
out reads the source of truth as before. Pure asyncio: no Redis or database here.
"""

from __future__ import annotations

import asyncio


class AppliedVersions:
    def __init__(self, remembered: int = 4096) -> None:
        """`remembered` bounds the newest-applied-version memory (a few KB per thousand
        entities). It closes the window between a reader's cache read and its wait: an event
        applied in between is seen here instead of waited for until the timeout."""
        self._remembered = remembered
        self._newest: dict[str, int] = {}  # insertion order = recency, oldest dropped first
        self._waiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        # False while the consumer is not subscribed to every partition: no event can arrive,
        # so waiting would only add the timeout to the read.
        self.live = False

    def record(self, entity: str, version: int) -> None:
        """The consumer applied `version` of `entity` to the cache (written, or already newer)."""
        known = self._newest.pop(entity, 0)
        self._newest[entity] = max(known, version)
        if len(self._newest) > self._remembered:
            del self._newest[next(iter(self._newest))]
        waiters = self._waiting.get(entity)
        if waiters is None:
            return
        still_waiting = []
        for wanted, future in waiters:
            if version < wanted:
                still_waiting.append((wanted, future))
            elif not future.done():
                future.set_result(None)
        if still_waiting:
            self._waiting[entity] = still_waiting
        else:
            del self._waiting[entity]

    def reached(self, entity: str, version: int) -> bool:
        return self._newest.get(entity, 0) >= version

    def newest(self, entity: str) -> int:
        """The newest version of `entity` applied here (0: none remembered)."""
        return self._newest.get(entity, 0)

    async def wait_for(self, entity: str, version: int, timeout_s: float) -> bool:
        """True once `entity` was applied at `version` or newer; False after `timeout_s`."""
        if self.reached(entity, version):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (version, future)
        self._waiting.setdefault(entity, []).append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            self._forget(entity, waiter)

    def waiting(self, entity: str) -> int:
        """Readers waiting on `entity` (for tests)."""
        return len(self._waiting.get(entity, ()))

    def _forget(self, entity: str, waiter: tuple[int, asyncio.Future[None]]) -> None:
        waiters = self._waiting.get(entity)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            return  # record() already removed it
        if not waiters:
            del self._waiting[entity]
