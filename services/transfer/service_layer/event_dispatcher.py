"""After commit: publish a transfer's events at once, confirm their outbox rows later, in bulk.

A transfer hands its events over and returns: its request path is the one `transfer_money`
statement. One background task publishes whatever has queued (one Redis round trip per master
for the whole batch). The publish script records each published outbox id in its partition's
published set inside Redis (services/transfer/adapters/event_publisher.py), which is where the
confirmation lives first, at no PostgreSQL cost. A second task writes the confirmations to
PostgreSQL every `confirm_interval_s` in one UPDATE for every row published since: one statement
per second per replica, however many transfers (at 500 transfers/s a replica, one statement per
1,000 rows).

If the process dies between a publish and its confirmation, the rows stay unconfirmed in
PostgreSQL and the outbox relay picks them up; the publish script finds their ids in the
published set and sends nothing twice, and the relay confirms them. A slow or dead Redis never
slows or fails a transfer: the queue is bounded, overflow is dropped, and whatever is not
confirmed is delivered by the relay (at least once; consumers apply events by version).

Events whose publish failed (Redis hung, a master failing over) are kept, up to a bound, and
published again every `retry_interval_s`: once Redis answers, they go out within that, instead
of waiting for the relay's minimum age (seconds), which is what kept caches stale after a hang.
Beyond the bound the oldest are left to the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable

from services.transfer.domain import OutboxEvent
from services.transfer.service_layer.ports import EventPublisher, OutboxStore
from shared.metrics import EVENTS
from shared.task_stopping import stop_tasks
from shared.tracing import current_traceparent

log = logging.getLogger(__name__)

# One UPDATE confirms at most this many rows (an array parameter of ~40 KB).
CONFIRM_CHUNK = 5_000


class EventDispatcher:
    def __init__(
        self,
        publisher: EventPublisher,
        store: OutboxStore,
        *,
        max_queue: int = 10_000,
        max_batch: int = 500,
        linger_s: float = 0.005,
        confirm_interval_s: float = 1.0,
        max_unconfirmed: int = 100_000,
        retry_interval_s: float = 0.25,
        max_retained: int = 10_000,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self._queue: asyncio.Queue[OutboxEvent] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._confirm_interval_s = confirm_interval_s
        self._max_unconfirmed = max_unconfirmed
        self._unconfirmed: list[int] = []
        self._retry_interval_s = retry_interval_s
        self._max_retained = max_retained
        self._unpublished: list[OutboxEvent] = []  # failed publishes, oldest first
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, events: Iterable[OutboxEvent]) -> None:
        """Queue committed events; never blocks and never raises. Called in the committing
        request's context: its trace goes with the events (the publishing runs elsewhere)."""
        traceparent = current_traceparent()
        for event in events:
            if traceparent:
                event = dataclasses.replace(event, traceparent=traceparent)
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                EVENTS.labels("dispatch_dropped").inc()  # the relay will publish it

    @property
    def unconfirmed(self) -> int:
        """Published events whose rows wait for the next confirmation."""
        return len(self._unconfirmed)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._publish_forever(), name="event-publisher"),
                           asyncio.create_task(self._confirm_forever(), name="outbox-confirmer"),
                           asyncio.create_task(self._retry_forever(), name="event-republisher")]

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued and confirm what was published (bounded by `timeout`), then
        stop: a drained replica leaves nothing for the relay."""
        if not self._tasks:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        await stop_tasks(self._tasks)
        self._tasks = []
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.confirm_published(), timeout)

    async def _publish_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger_s and self._queue.qsize() < self._max_batch:
                # A few milliseconds of event latency buy batches: under load, one publish is
                # shared by many transfers instead of a couple.
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.dispatch(batch)
            except Exception:  # the task must outlive any one bad batch
                log.exception("publishing %d events failed; the relay will deliver them",
                              len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval_s)
            if not self._unpublished:
                continue
            batch = self._unpublished[:self._max_batch]
            del self._unpublished[:len(batch)]
            try:
                await self.dispatch(batch)
            except Exception:
                log.exception("publishing %d events again failed; the relay will deliver them",
                              len(batch))

    async def _confirm_forever(self) -> None:
        while True:
            await asyncio.sleep(self._confirm_interval_s)
            await self.confirm_published()

    async def dispatch(self, batch: list[OutboxEvent]) -> None:
        """Publish a batch now; its rows join the next confirmation."""
        published = await self._publisher.publish(batch)
        self._unconfirmed.extend(published)
        if len(published) < len(batch):
            out = set(published)
            self._unpublished.extend(e for e in batch if e.outbox_id not in out)
            excess = len(self._unpublished) - self._max_retained
            if excess > 0:
                del self._unpublished[:excess]  # the relay delivers them
                EVENTS.labels("retry_dropped").inc(excess)
        overflow = len(self._unconfirmed) - self._max_unconfirmed
        if overflow > 0:
            # PostgreSQL has been refusing confirmations for a long time: forget the oldest
            # (the relay confirms them; the published sets keep the events from going out twice).
            del self._unconfirmed[:overflow]
            EVENTS.labels("confirm_dropped").inc(overflow)

    async def confirm_published(self) -> None:
        """Confirm every row published since the last call, in as few statements as possible.
        Never raises: rows that could not be confirmed are tried again next time."""
        pending, self._unconfirmed = self._unconfirmed, []
        for start in range(0, len(pending), CONFIRM_CHUNK):
            chunk = pending[start:start + CONFIRM_CHUNK]
            try:
                await self._store.mark_published(chunk)
            except asyncio.CancelledError:
                self._unconfirmed = pending[start:] + self._unconfirmed
                raise
            except Exception as err:
                log.warning("confirming %d published outbox rows failed (%s: %s); retrying",
                            len(pending) - start, type(err).__name__, err)
                self._unconfirmed = pending[start:] + self._unconfirmed
                return
