"""Consumes `bank.v1.BalanceChanged` from every partition channel and applies it to the cache.

Pub/sub loses messages while a subscriber is away, so entries would stay stale until their TTL.
Two signals trigger a catch-up from the PostgreSQL outbox for a partition:
- a (re)subscription confirmation: anything may have been published while we were not there;
- a gap in the partition's sequence (assigned inside Redis by the publish script).
A failed apply is logged, kept, and retried by the catch-up loop until it succeeds: an event is
never dropped silently. Every apply is the versioned compare-and-set, so replays are harmless.
Each applied version is recorded in `AppliedVersions`, where a read that asked for it may be
waiting (read-your-writes right after a transfer, served from the cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from bank.v1 import events_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from services.account.adapters.event_subscription import Notice
from services.account.domain import BalanceChange, LedgerEntry
from services.account.service_layer.balance_events import BalanceEventApplier
from services.account.service_layer.ports import OutboxReader
from shared.cache import AppliedVersions
from shared.events import channel_name, decode_balance_changed
from shared.metrics import EVENT_LAG, EVENTS

log = logging.getLogger(__name__)

_APPLY_CONCURRENCY = 32
# How many versions before an account's newest a catch-up replays (see `_to_replay`).
_CATCH_UP_CHAIN = 8


class EventSubscription(Protocol):
    async def open(self, channels: Sequence[str], *, refresh_topology: bool) -> None: ...

    async def receive(self) -> Notice: ...

    async def close(self) -> None: ...


def _micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def _ledger_entry(event: events_pb2.BalanceChanged) -> LedgerEntry | None:
    """The event's ledger entry, if it carries one for its own account."""
    if not event.HasField("entry") or event.entry.account_id != event.account_id:
        return None
    entry = event.entry
    return LedgerEntry(entry.entry_id, entry.transfer_id, entry.amount.minor_units,
                       entry.balance_after.minor_units, entry.counterparty_account_id,
                       entry.description, _micros(entry.created_at))


def change_from_event(event: events_pb2.BalanceChanged) -> BalanceChange:
    occurred_us = _micros(event.occurred_at) if event.HasField("occurred_at") else 0
    return BalanceChange(event.account_id, event.version, event.balance.currency,
                         event.balance.minor_units, occurred_us, _ledger_entry(event))


class BalanceEventConsumer:
    def __init__(
        self,
        *,
        new_subscription: Callable[[], EventSubscription],
        applier: BalanceEventApplier,
        outbox: OutboxReader,
        partitions: int,
        catch_up_window_s: float,
        max_backoff_s: float = 1.0,
        applied_versions: AppliedVersions | None = None,
    ) -> None:
        self._new_subscription = new_subscription
        self._applier = applier
        self._outbox = outbox
        self._channels = {channel_name(p): p for p in range(partitions)}
        self._window_s = catch_up_window_s
        self._max_backoff_s = max_backoff_s
        self._applied_versions = applied_versions or AppliedVersions()
        self._applied = EVENTS.labels("applied")
        self._last_sequence: dict[int, int] = {}
        self._dirty_partitions: set[int] = set()
        self._pending: dict[str, BalanceChange] = {}  # failed applies, newest per account
        self._catch_up_wanted = asyncio.Event()
        self._subscribed: set[int] = set()
        self._all_subscribed = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        if self._tasks:
            return
        self._last_sequence.clear()
        self._caught_up.clear()
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="balance-events"),
            asyncio.create_task(self._catch_up_forever(), name="balance-events-catch-up"),
        ]

    async def stop(self) -> None:
        """Disconnect. Events published until the next `start()` are caught up from the outbox."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._subscribed_to(False)

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        """For tests and start-up: until every partition channel is subscribed."""
        async with asyncio.timeout(timeout_s):
            await self._all_subscribed.wait()

    async def wait_caught_up(self, timeout_s: float = 10.0) -> None:
        """Until every partition is subscribed and no catch-up or retry is outstanding."""
        async with asyncio.timeout(timeout_s):
            while True:
                await self._all_subscribed.wait()
                await self._caught_up.wait()
                if self._all_subscribed.is_set() and self._caught_up.is_set():
                    return

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
                self._subscribed_to(False)
                await subscription.close()
            refresh_topology = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _on_notice(self, notice: Notice) -> None:
        partition = self._channels.get(notice.channel)
        if partition is None:
            return
        if notice.data is None:
            # (Re)subscribed: whatever was published while we were away is only in the outbox.
            self._last_sequence.pop(partition, None)
            self._subscribed.add(partition)
            if len(self._subscribed) == len(self._channels):
                self._subscribed_to(True)
            self._request_catch_up(partition)
            return
        try:
            event = decode_balance_changed(notice.data)
        except DecodeError:
            EVENTS.labels("undecodable").inc()
            log.error("undecodable balance event on %s; catching up instead", notice.channel)
            self._request_catch_up(partition)
            return
        sequence = event.partition_sequence
        last = self._last_sequence.get(partition)
        if last is not None and sequence != last + 1:
            # A jump is a lost message; a step back means the counter restarted (a failover
            # lost its last increments): either way the outbox has what we may have missed.
            EVENTS.labels("gap").inc()
            log.info("sequence gap on partition %d (%d after %d); catching up",
                     partition, sequence, last)
            self._request_catch_up(partition)
        self._last_sequence[partition] = sequence
        await self._apply(change_from_event(event), partition)

    async def _apply(self, change: BalanceChange, partition: int | None) -> bool:
        try:
            await self._applier.apply(change)
        except Exception as err:
            EVENTS.labels("apply_failed").inc()
            log.warning("applying balance event for %s v%d failed (%s); will retry",
                        change.account_id, change.version, type(err).__name__)
            self._keep_pending(change)
            self._request_catch_up(partition)
            return False
        self._applied.inc()
        self._applied_versions.record(change.account_id, change.version)
        if change.occurred_us:
            EVENT_LAG.observe(max(0.0, time.time() - change.occurred_us / 1_000_000))
        return True

    def _subscribed_to(self, every_partition: bool) -> None:
        """Readers wait for events only while every partition is subscribed: otherwise the event
        they wait for may be published into the void (the catch-up will bring it, later)."""
        if every_partition:
            self._all_subscribed.set()
        else:
            self._subscribed.clear()
            self._all_subscribed.clear()
        self._applied_versions.live = every_partition

    def _keep_pending(self, change: BalanceChange) -> None:
        known = self._pending.get(change.account_id)
        if known is None or known.version < change.version:
            self._pending[change.account_id] = change

    def _request_catch_up(self, partition: int | None) -> None:
        if partition is not None:
            self._dirty_partitions.add(partition)
        self._caught_up.clear()
        self._catch_up_wanted.set()

    async def _catch_up_forever(self) -> None:
        backoff = 0.05
        while True:
            if not self._catch_up_wanted.is_set() and self._subscribed:
                self._caught_up.set()
            await self._catch_up_wanted.wait()
            self._catch_up_wanted.clear()
            partitions = sorted(self._dirty_partitions)
            self._dirty_partitions.clear()
            pending, self._pending = self._pending, {}
            try:
                await self._catch_up(partitions, pending)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("catch-up of partitions %s failed (%s: %s); retrying",
                            partitions, type(err).__name__, err)
                self._dirty_partitions.update(partitions)
                for change in pending.values():
                    self._keep_pending(change)
                self._catch_up_wanted.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
            else:
                backoff = 0.05

    async def _catch_up(self, partitions: list[int], pending: dict[str, BalanceChange]) -> None:
        by_account: dict[str, dict[int, BalanceChange]] = {
            account: {change.version: change} for account, change in pending.items()
        }
        if partitions:
            EVENTS.labels("catch_up").inc()
            for payload in await self._outbox.balance_change_payloads(partitions, self._window_s):
                try:
                    change = change_from_event(decode_balance_changed(payload))
                except DecodeError:
                    log.error("undecodable outbox payload skipped")
                    continue
                by_account.setdefault(change.account_id, {}).setdefault(change.version, change)
        histories = [self._to_replay(versions) for versions in by_account.values()]
        failed = 0
        for start in range(0, len(histories), _APPLY_CONCURRENCY):
            batch = histories[start : start + _APPLY_CONCURRENCY]
            failed += sum(await asyncio.gather(*(self._apply_in_order(h) for h in batch)))
        if failed:
            raise RuntimeError(f"{failed} of {sum(map(len, histories))} catch-up applies failed")

    def _to_replay(self, versions: dict[int, BalanceChange]) -> list[BalanceChange]:
        """An account's changes to apply, oldest first. The newest always (as a live event
        would be); before it, the few newest this replica has not applied yet: a recent list
        cached one version behind takes their entries one by one, where the newest alone would
        find a gap and tombstone it. Older ones would only cost a Redis call each."""
        ordered = [versions[v] for v in sorted(versions)]
        newest = ordered.pop()
        missed = [c for c in ordered[-_CATCH_UP_CHAIN:]
                  if not self._applied_versions.reached(c.account_id, c.version)]
        return [*missed, newest]

    async def _apply_in_order(self, history: list[BalanceChange]) -> int:
        """Applies one account's changes in version order; returns how many failed."""
        failed = 0
        for change in history:
            if not await self._apply(change, None):
                failed += 1
        return failed
