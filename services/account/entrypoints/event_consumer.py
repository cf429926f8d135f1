"""Consumes `bank.v1.BalanceChanged` from every partition channel: subscribes, decodes, and hands
each notice to the service layer (service_layer/balance_event_sync.py), which owns what to do
with it: apply, catch up after a gap or a resubscription, retry what failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from services.account.adapters.balance_changed import change_from_event
from services.account.adapters.event_subscription import Notice
from services.account.service_layer.balance_event_sync import BalanceEventSync
from shared.events import channel_name, decode_balance_changed
from shared.metrics import EVENTS
from shared.task_stopping import stop_tasks

log = logging.getLogger(__name__)


class EventSubscription(Protocol):
    async def open(self, channels: Sequence[str], *, refresh_topology: bool) -> None: ...

    async def receive(self) -> Notice: ...

    async def close(self) -> None: ...


class BalanceEventConsumer:
    def __init__(
        self,
        *,
        new_subscription: Callable[[], EventSubscription],
        sync: BalanceEventSync,
        partitions: int,
        max_backoff_s: float = 1.0,
    ) -> None:
        self._new_subscription = new_subscription
        self.sync = sync
        self._channels = {channel_name(p): p for p in range(partitions)}
        self._max_backoff_s = max_backoff_s
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        if self._tasks:
            return
        self.sync.restart()
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="balance-events"),
            asyncio.create_task(self.sync.catch_up_forever(), name="balance-events-catch-up"),
        ]

    async def stop(self) -> None:
        """Disconnect. Events published until the next `start()` are caught up from the outbox."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)
        self.sync.unsubscribed()

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        """For tests and start-up: until every partition channel is subscribed."""
        await self.sync.wait_subscribed(timeout_s)

    async def wait_caught_up(self, timeout_s: float = 10.0) -> None:
        """Until every partition is subscribed and no catch-up or retry is outstanding."""
        await self.sync.wait_caught_up(timeout_s)

    async def _subscribe_forever(self) -> None:
        backoff = 0.05
        refresh_topology = False
        while True:
            subscription = self._new_subscription()
            try:
                await subscription.open(list(self._channels), refresh_topology=refresh_topology)
                while True:
                    notice = await subscription.receive()
                    backoff = 0.05
                    await self._on_notice(notice)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                EVENTS.labels("reconnect").inc()
                log.warning("balance event subscription lost (%s: %s); reconnecting",
                            type(err).__name__, err)
            finally:
                self.sync.unsubscribed()
                await subscription.close()
            refresh_topology = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _on_notice(self, notice: Notice) -> None:
        partition = self._channels.get(notice.channel)
        if partition is None:
            return
        if notice.data is None:
            self.sync.subscribed(partition)
            return
        try:
            event = decode_balance_changed(notice.data)
        except DecodeError:
            self.sync.undecodable(partition)
            return
        await self.sync.received(partition, change_from_event(event), event.partition_sequence)
