"""The outbox relay: publishes outbox rows that stayed unpublished (the service crashed between
commit and publish, Redis was down, the dispatcher's queue overflowed) and marks them published.

Rows younger than `min_age_s` are left to the service that wrote them, which normally publishes
within milliseconds; the relay only picks up what it missed. Claims use FOR UPDATE SKIP LOCKED,
so several relays can run. Delivery is at least once (a crash after publish and before the mark
publishes again); consumers apply events idempotently by account version.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
        min_age_s: float = 1.5,
        poll_s: float = 0.5,
        batch_size: int = 500,
        idempotency_retention_s: int = 86_400,
        purge_every_s: float = 300.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self.min_age_s = min_age_s
        self.poll_s = poll_s
        self.batch_size = batch_size
        self._retention_s = idempotency_retention_s
        self._purge_every_s = purge_every_s
        # None: purge on the first cycle (monotonic time starts near 0 on a fresh machine).
        self._last_purge: float | None = None

    async def run_cycle(self) -> int:
        """Drain what is stale now, refresh the backlog gauge, purge expired rejections."""
        relayed = 0
        while True:
            claimed, published = await relay_once(
                self._store, self._publisher, min_age_s=self.min_age_s, limit=self.batch_size
            )
            relayed += published
            # Stop on a short batch, or when Redis refuses: retry on the next poll.
            if claimed < self.batch_size or published < claimed:
                break
        OUTBOX_BACKLOG.set(await self._store.backlog())
        if self._last_purge is None or time.monotonic() - self._last_purge >= self._purge_every_s:
            self._last_purge = time.monotonic()
            purged = await self._store.purge_rejections(self._retention_s)
            if purged:
                log.info("purged %d expired idempotency rejections", purged)
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
