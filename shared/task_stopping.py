"""Stopping background tasks when a library may swallow a cancellation.

redis-py's asyncio client (connection set-up, cluster initialisation, pub/sub reads) can catch
the CancelledError delivered while it awaits a socket and carry on. A task cancelled at that
moment keeps running, the next await parks it for good, and a shutdown that awaits it hangs
(seen: the account service's stop() waiting forever on its event consumer, which was still
subscribing). `stop_tasks` cancels again until each task has ended, and gives up (logging) at a
deadline rather than hang a shutdown. It re-cancels only after a second: a task that did take
the cancellation may be awaiting its own bounded clean-up (closing connections), which a
cancellation every few milliseconds would cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

_RECANCEL_EVERY_S = 1.0


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, deadline_s: float = 5.0) -> None:
    """Cancel `tasks` and wait until they have ended, re-cancelling the ones that ignored it.
    Exceptions the tasks end with are logged, not raised (a stopping task's failure is moot)."""
    pending: set[asyncio.Task[Any]] = set(tasks)
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline_s
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=_RECANCEL_EVERY_S)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("task %s ended with %r while stopping", task.get_name(),
                            task.exception())
        if pending and loop.time() > give_up_at:
            log.error("tasks did not stop within %.1f s: %s", deadline_s,
                      ", ".join(sorted(t.get_name() for t in pending)))
            return
