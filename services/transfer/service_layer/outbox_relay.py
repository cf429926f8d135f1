"""The outbox relay: publishes the events of outbox rows that stayed unconfirmed (the service
died between commit and publish, or between publish and its batched confirmation; Redis was
down; the dispatcher's queue overflowed) and confirms the rows.

Rows younger than `min_age_s` are left to the service that wrote them, which publishes within
milliseconds and confirms within its confirmation interval; the relay only picks up what it
missed. Claims use FOR UPDATE SKIP LOCKED, so several relays can run. The publish script skips
events its partition's published set already holds, so an event the service sent before dying
is not sent again; past that set's memory, delivery is at least once, and consumers apply events
idempotently by account version.
"""

from __future__ import annotations

import asyncio
import logging

from services.transfer.service_layer.ports import EventPublisher, OutboxStore
from shared.metrics import EVENTS, OUTBOX_BACKLOG

log = logging.getLogger(__name__)


async def relay_once(
    store: OutboxStore, publisher: EventPublisher, *, min_age_s: float, limit: int
) -> tuple[int, int]:
    """One batch: returns (rows claimed, rows published)."""
    async with store.claim_unpublished(min_age_s, limit) as batch:
        if not batch.events:
            return 0, 0
        published = await publisher.publish(batch.events)
        await batch.mark_published(published)
    EVENTS.labels("relayed").inc(len(published))
    return len(batch.events), len(published)


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        min_age_s: float = 3.0,
        poll_s: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self.min_age_s = min_age_s
        self.poll_s = poll_s
        self.batch_size = batch_size

    async def run_cycle(self) -> int:
        """Drain what is stale now and refresh the backlog gauge."""
        relayed = 0
        while True:
            claimed, published = await relay_once(
                self._store, self._publisher, min_age_s=self.min_age_s, limit=self.batch_size
            )
            relayed += published
            # Stop on a short batch, or when Redis refuses: retry on the next poll.
            if claimed < self.batch_size or published < claimed:
                break
        OUTBOX_BACKLOG.set(await self._store.backlog(self.min_age_s))
        return relayed

    async def run_forever(self) -> None:
        while True:
            try:
                relayed = await self.run_cycle()
                if relayed:
                    log.info("relayed %d outbox events", relayed)
            except Exception:  # the loop must survive a database or Redis outage
                log.exception("outbox relay cycle failed; retrying")
            await asyncio.sleep(self.poll_s)
