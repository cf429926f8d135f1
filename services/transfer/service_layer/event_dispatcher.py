"""After commit: publish a transfer's events and mark their outbox rows published, in batches.

A transfer hands its events over and returns at once; one background task publishes whatever
has queued up (one Redis round trip per master for the whole batch) and then marks the batch
published (one UPDATE). Under load the batches grow by themselves, so both costs are shared by
many transfers instead of adding two round trips to each. A slow or dead Redis therefore never
slows or fails a transfer: the queue is bounded, overflow is dropped, and anything not marked
published is delivered by the outbox relay (at least once; consumers apply events by version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from services.transfer.domain import OutboxEvent
from services.transfer.service_layer.ports import EventPublisher, OutboxStore
from shared.metrics import EVENTS

log = logging.getLogger(__name__)


class EventDispatcher:
    def __init__(
        self,
        publisher: EventPublisher,
        store: OutboxStore,
        *,
        max_queue: int = 10_000,
        max_batch: int = 500,
        linger_s: float = 0.005,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self._queue: asyncio.Queue[OutboxEvent] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._task: asyncio.Task[None] | None = None

    def submit(self, events: Iterable[OutboxEvent]) -> None:
        """Queue committed events; never blocks and never raises."""
        for event in events:
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                EVENTS.labels("dispatch_dropped").inc()  # the relay will publish it

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-dispatcher")

    async def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded by `timeout`), then stop the task."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger_s and self._queue.qsize() < self._max_batch:
                # A few milliseconds of event latency buy batches: under load, the publish
                # and the mark are shared by many transfers instead of a couple.
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.dispatch(batch)
            except Exception:  # the task must outlive any one bad batch
                log.exception("dispatching %d events failed; the relay will deliver them",
                              len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def dispatch(self, batch: list[OutboxEvent]) -> None:
        published = await self._publisher.publish(batch)
        if published:
            await self._store.mark_published(published)
