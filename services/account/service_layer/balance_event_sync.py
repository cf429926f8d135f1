"""Keeping the cache in step with the balance-changed stream: apply each event, notice what may
have been missed, and catch up from the PostgreSQL outbox. The entrypoint
(entrypoints/event_consumer.py) only subscribes and decodes; it tells `BalanceEventSync` what the
subscription saw, and runs its catch-up loop.

Pub/sub loses messages while a subscriber is away, so entries would stay stale until their TTL.
Two signals request a catch-up of a partition:
- a (re)subscription: anything may have been published while we were not there;
- a gap in the partition's sequence (assigned inside Redis by the publish script), or a message
  that cannot be decoded.
A third asks for a repair of cache slots: a Redis topology event (a failover, a primary
reconnected after losing its connection, the cluster answering again after CLUSTERDOWN;
shared/redis_pipeline.py). Replication is asynchronous, so the new primary may lack writes the
old one acknowledged: any event applied there may be gone. The repair replays the outbox of every
partition over the whole catch-up window (the oldest change an entry still cached can predate,
so the margin is always safe) for the accounts whose keys live in the slots it is given.
A failed apply is logged, kept, and retried by the catch-up loop until it succeeds, with
backoff (`bank_events_total{outcome="catch_up_failed"}` counts failed rounds,
`bank_event_catch_up_pending` what waits): an event is never dropped silently. Every apply is
the versioned compare-and-set, so replays are harmless.
Each applied version is recorded in `AppliedVersions`, where a read that asked for it may be
waiting (read-your-writes right after a transfer, served from the cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from services.account.domain import BalanceChange
from services.account.service_layer.ports import OutboxReader
from shared.cache import AppliedVersions
from shared.events import partition_of
from shared.metrics import CATCH_UP_PENDING, EVENT_LAG, EVENTS
from shared.tracing import consumer_span

log = logging.getLogger(__name__)

_APPLY_CONCURRENCY = 32
# How many versions before an account's newest a catch-up replays (see `changes_to_replay`).
CATCH_UP_CHAIN = 8
_FIRST_BACKOFF_S = 0.05


class ChangeApplier(Protocol):
    async def apply(self, change: BalanceChange) -> object:
        """Write the change to the cache; raises when the cache cannot take it."""
        ...


class PartitionSequences:
    """The last sequence number seen per partition, to notice lost messages."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def forget(self, partition: int | None = None) -> None:
        """No baseline for `partition` (every partition when None): its next number is taken
        as it comes (after a resubscription, whatever was missed is caught up anyway)."""
        if partition is None:
            self._last.clear()
        else:
            self._last.pop(partition, None)

    def gap_before(self, partition: int, sequence: int) -> int | None:
        """Records `sequence`; returns the previous number when `sequence` does not follow it.
        A jump is a lost message; a step back means the counter restarted (a failover lost its
        last increments): either way the outbox has what may have been missed."""
        last = self._last.get(partition)
        self._last[partition] = sequence
        if last is not None and sequence != last + 1:
            return last
        return None


def changes_to_replay(
    changes: Iterable[BalanceChange], reached: Callable[[str, int], bool]
) -> list[list[BalanceChange]]:
    """Per account, the changes a catch-up applies, oldest first. The newest always (as a live
    event would be); before it, the few newest that this replica has not applied yet (`reached`
    says which it has): a recent list cached one version behind takes their entries one by one,
    where the newest alone would find a gap and tombstone it. Older ones would only cost a Redis
    call each. Of two changes with one version, the first given wins."""
    by_account: dict[str, dict[int, BalanceChange]] = {}
    for change in changes:
        by_account.setdefault(change.account_id, {}).setdefault(change.version, change)
    histories = []
    for versions in by_account.values():
        ordered = [versions[v] for v in sorted(versions)]
        newest = ordered.pop()
        missed = [c for c in ordered[-CATCH_UP_CHAIN:] if not reached(c.account_id, c.version)]
        histories.append([*missed, newest])
    return histories


class BalanceEventSync:
    def __init__(
        self,
        *,
        applier: ChangeApplier,
        outbox: OutboxReader,
        partitions: int,
        catch_up_window_s: float,
        max_backoff_s: float = 1.0,
        first_backoff_s: float = _FIRST_BACKOFF_S,
        applied_versions: AppliedVersions | None = None,
        slot_of: Callable[[str], int] | None = None,
    ) -> None:
        """`slot_of`: the cache slot of an account's entries, to repair only the slots a
        topology event names (None: a repair replays every account)."""
        self._applier = applier
        self._outbox = outbox
        self._partitions = partitions
        self._window_s = catch_up_window_s
        self._max_backoff_s = max_backoff_s
        self._first_backoff_s = first_backoff_s
        self.applied_versions = applied_versions or AppliedVersions()
        self._applied = EVENTS.labels("applied")
        self._sequences = PartitionSequences()
        self._slot_of = slot_of
        self._dirty_partitions: set[int] = set()
        self._repair_slots: set[int] = set()
        self._pending: dict[str, BalanceChange] = {}  # failed applies, newest per account
        self._catch_up_wanted = asyncio.Event()
        self._retry_now = asyncio.Event()  # cuts a retry's backoff short (a new topology)
        self._subscribed: set[int] = set()
        self._all_subscribed = asyncio.Event()
        self._caught_up = asyncio.Event()

    # What the subscription saw.

    def restart(self) -> None:
        """A new subscription starts: no sequence baseline, not caught up."""
        self._sequences.forget()
        self._caught_up.clear()

    def subscribed(self, partition: int) -> None:
        """(Re)subscribed: whatever was published while we were away is only in the outbox."""
        self._sequences.forget(partition)
        self._subscribed.add(partition)
        if len(self._subscribed) == self._partitions:
            self._set_live(True)
        self.request_catch_up(partition)

    def unsubscribed(self) -> None:
        """The subscription ended (lost or stopped): every partition must resubscribe."""
        self._set_live(False)

    def undecodable(self, partition: int) -> None:
        EVENTS.labels("undecodable").inc()
        log.error("undecodable balance event on partition %d; catching up instead", partition)
        self.request_catch_up(partition)

    async def received(self, partition: int, change: BalanceChange, sequence: int) -> None:
        last = self._sequences.gap_before(partition, sequence)
        if last is not None:
            EVENTS.labels("gap").inc()
            log.info("sequence gap on partition %d (%d after %d); catching up",
                     partition, sequence, last)
            self.request_catch_up(partition)
        await self._apply(change, partition)

    # Waiting for the state a test or a start-up needs.

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
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

    # The catch-up.

    @property
    def catch_up_wanted(self) -> bool:
        return self._catch_up_wanted.is_set()

    @property
    def pending(self) -> dict[str, BalanceChange]:
        """Failed applies waiting for the next catch-up, newest per account."""
        return dict(self._pending)

    def request_catch_up(self, partition: int | None) -> None:
        if partition is not None:
            self._dirty_partitions.add(partition)
        self._caught_up.clear()
        self._catch_up_wanted.set()

    def request_repair(self, slots: Iterable[int]) -> None:
        """A topology event: these cache slots may have lost acknowledged writes. Starts at once,
        even during a failed round's backoff (the new topology is why it failed)."""
        self._repair_slots.update(slots)
        self._retry_now.set()
        self.request_catch_up(None)

    async def catch_up_forever(self) -> None:
        """Catch up whenever asked; a failed round is retried with backoff, never given up."""
        backoff = self._first_backoff_s
        while True:
            if not self._catch_up_wanted.is_set() and self._subscribed:
                self._caught_up.set()
            await self._catch_up_wanted.wait()
            self._retry_now.clear()
            try:
                await self.catch_up_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                EVENTS.labels("catch_up_failed").inc()
                try:
                    async with asyncio.timeout(backoff):
                        await self._retry_now.wait()
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, self._max_backoff_s)
            else:
                backoff = self._first_backoff_s

    async def catch_up_once(self) -> None:
        """One round: the outbox rows of the partitions that asked for it, plus the failed
        applies. If anything fails, all of it is asked for again, and the error is raised."""
        self._catch_up_wanted.clear()
        partitions = sorted(self._dirty_partitions)
        self._dirty_partitions.clear()
        repair, self._repair_slots = self._repair_slots, set()
        pending, self._pending = self._pending, {}
        CATCH_UP_PENDING.set(len(pending))
        try:
            await self._catch_up(partitions, repair, pending)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("catch-up of partitions %s%s failed (%s: %s); retrying",
                        partitions, f" and repair of {len(repair)} slots" if repair else "",
                        type(err).__name__, err)
            self._dirty_partitions.update(partitions)
            self._repair_slots.update(repair)
            for change in pending.values():
                self._keep_pending(change)
            self._catch_up_wanted.set()
            raise
        finally:
            CATCH_UP_PENDING.set(len(self._pending))

    async def _catch_up(self, partitions: list[int], repair: set[int],
                        pending: dict[str, BalanceChange]) -> None:
        changes = list(pending.values())
        if repair:
            EVENTS.labels("repair").inc()
            dirty = set(partitions)
            slot_of = self._slot_of
            replayed = await self._outbox.balance_changes(range(self._partitions), self._window_s)
            changes += [c for c in replayed
                        if slot_of is None or slot_of(c.account_id) in repair
                        or partition_of(c.account_id, self._partitions) in dirty]
        elif partitions:
            EVENTS.labels("catch_up").inc()
            changes += await self._outbox.balance_changes(partitions, self._window_s)
        histories = changes_to_replay(changes, self.applied_versions.reached)
        failed = 0
        for start in range(0, len(histories), _APPLY_CONCURRENCY):
            batch = histories[start : start + _APPLY_CONCURRENCY]
            failed += sum(await asyncio.gather(*(self._apply_in_order(h) for h in batch)))
        if failed:
            raise RuntimeError(f"{failed} of {sum(map(len, histories))} catch-up applies failed")

    async def _apply_in_order(self, history: list[BalanceChange]) -> int:
        """Applies one account's changes in version order; returns how many failed."""
        failed = 0
        for change in history:
            if not await self._apply(change, None):
                failed += 1
        return failed

    async def _apply(self, change: BalanceChange, partition: int | None) -> bool:
        try:
            with consumer_span("apply BalanceChanged", change.traceparent):
                await self._applier.apply(change)
        except Exception as err:
            EVENTS.labels("apply_failed").inc()
            log.warning("applying balance event for %s v%d failed (%s); will retry",
                        change.account_id, change.version, type(err).__name__)
            self._keep_pending(change)
            self.request_catch_up(partition)
            return False
        self._applied.inc()
        self.applied_versions.record(change.account_id, change.version)
        if change.occurred_us:
            EVENT_LAG.observe(max(0.0, time.time() - change.occurred_us / 1_000_000))
        return True

    def _set_live(self, every_partition: bool) -> None:
        """Readers wait for events only while every partition is subscribed: otherwise the event
        they wait for may be published into the void (the catch-up will bring it, later)."""
        if every_partition:
            self._all_subscribed.set()
        else:
            self._subscribed.clear()
            self._all_subscribed.clear()
        self.applied_versions.live = every_partition

    def _keep_pending(self, change: BalanceChange) -> None:
        known = self._pending.get(change.account_id)
        if known is None or known.version < change.version:
            self._pending[change.account_id] = change
            CATCH_UP_PENDING.set(len(self._pending))
