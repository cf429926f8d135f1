"""The balance-event policy (service_layer/balance_event_sync.py) driven directly, without a
subscription: when a catch-up is asked for, what it replays, and how failures are retried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from bank.v1 import common_pb2, events_pb2
from prometheus_client import REGISTRY

from services.account.adapters.fakes import FakeOutboxReader
from services.account.domain import BalanceChange
from services.account.service_layer.balance_event_sync import (
    CATCH_UP_CHAIN,
    BalanceEventSync,
    PartitionSequences,
    changes_to_replay,
)
from shared.cache import AppliedVersions


class RecordingApplier:
    """Records what it applies; `failing` makes every apply raise (Redis down)."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, int]] = []
        self.failing = False

    async def apply(self, change: BalanceChange) -> None:
        if self.failing:
            raise ConnectionError("cache is down")
        self.applied.append((change.account_id, change.version))


def change(account: str, version: int) -> BalanceChange:
    return BalanceChange(account, version, "EUR", 10 * version, 0)


def outbox_row(account: str, version: int) -> bytes:
    return events_pb2.BalanceChanged(
        account_id=account, version=version,
        balance=common_pb2.Money(minor_units=10 * version, currency="EUR"),
    ).SerializeToString()


@pytest.fixture
def applier() -> RecordingApplier:
    return RecordingApplier()


@pytest.fixture
def outbox() -> FakeOutboxReader:
    return FakeOutboxReader()


@pytest.fixture
def sync(applier: RecordingApplier, outbox: FakeOutboxReader) -> BalanceEventSync:
    return BalanceEventSync(applier=applier, outbox=outbox, partitions=2, catch_up_window_s=60,
                            applied_versions=AppliedVersions())


def test_a_sequence_that_does_not_follow_the_last_is_a_gap() -> None:
    sequences = PartitionSequences()
    assert sequences.gap_before(0, 7) is None  # no baseline yet
    assert sequences.gap_before(0, 8) is None
    assert sequences.gap_before(1, 3) is None  # partitions are counted apart
    assert sequences.gap_before(0, 10) == 8  # 9 was lost
    assert sequences.gap_before(0, 2) == 10  # the counter restarted (a failover)
    sequences.forget(0)
    assert sequences.gap_before(0, 40) is None
    assert sequences.gap_before(1, 5) == 3


async def test_events_in_sequence_are_applied_and_ask_for_nothing(
    sync: BalanceEventSync, applier: RecordingApplier
) -> None:
    await sync.received(0, change("a", 1), sequence=5)
    await sync.received(0, change("a", 2), sequence=6)
    assert applier.applied == [("a", 1), ("a", 2)]
    assert not sync.catch_up_wanted
    assert sync.applied_versions.reached("a", 2)


async def test_a_gap_catches_up_its_partition_from_the_outbox(
    sync: BalanceEventSync, applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    outbox.rows += [(1, outbox_row("lost", 4)), (0, outbox_row("other", 9))]
    await sync.received(1, change("seen", 1), sequence=1)
    await sync.received(1, change("seen", 2), sequence=3)
    assert sync.catch_up_wanted
    await sync.catch_up_once()
    assert ("lost", 4) in applier.applied and ("other", 9) not in applier.applied
    assert not sync.catch_up_wanted and outbox.queries == 1


async def test_a_subscription_catches_up_and_all_partitions_make_the_stream_live(
    sync: BalanceEventSync, outbox: FakeOutboxReader
) -> None:
    sync.subscribed(0)
    assert sync.catch_up_wanted and not sync.applied_versions.live
    sync.subscribed(1)
    assert sync.applied_versions.live  # readers may now wait for events
    await sync.catch_up_once()
    assert outbox.queries == 1
    sync.unsubscribed()
    assert not sync.applied_versions.live


async def test_an_undecodable_message_catches_up_its_partition(
    sync: BalanceEventSync, applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    outbox.rows.append((0, outbox_row("a", 3)))
    sync.undecodable(0)
    await sync.catch_up_once()
    assert applier.applied == [("a", 3)]


async def test_a_failed_apply_is_kept_and_retried_by_the_next_catch_up(
    sync: BalanceEventSync, applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    applier.failing = True
    await sync.received(0, change("a", 2), sequence=1)
    await sync.received(0, change("a", 3), sequence=2)
    assert sync.pending == {"a": change("a", 3)}  # the newest per account
    assert sync.catch_up_wanted
    with pytest.raises(RuntimeError):
        await sync.catch_up_once()  # still down: kept, asked for again
    assert sync.pending == {"a": change("a", 3)} and sync.catch_up_wanted
    applier.failing = False
    await sync.catch_up_once()
    assert applier.applied == [("a", 3)]
    assert sync.pending == {} and not sync.catch_up_wanted
    assert outbox.queries == 2  # its partition is caught up too, in each round


async def test_a_failed_outbox_query_keeps_the_partitions_and_the_pending_applies(
    sync: BalanceEventSync, applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    applier.failing = True
    await sync.received(1, change("a", 2), sequence=1)
    applier.failing = False
    sync.subscribed(1)
    outbox.rows.append((1, outbox_row("b", 7)))
    outbox.fail = True
    with pytest.raises(ConnectionError):
        await sync.catch_up_once()
    assert applier.applied == [] and sync.catch_up_wanted
    outbox.fail = False
    await sync.catch_up_once()
    assert sorted(applier.applied) == [("a", 2), ("b", 7)]


def test_a_replay_is_the_newest_plus_the_few_unapplied_before_it_oldest_first() -> None:
    applied = {("a", 3)}
    changes = [change("a", v) for v in (5, 3, 4, 2, 6)] + [change("b", 1)]
    histories = changes_to_replay(changes, lambda account, v: (account, v) in applied)
    assert [[c.version for c in h] for h in histories] == [[2, 4, 5, 6], [1]]


def test_a_replay_reaches_back_a_bounded_chain() -> None:
    newest = 3 * CATCH_UP_CHAIN
    histories = changes_to_replay([change("a", v) for v in range(1, newest + 1)],
                                  lambda account, v: False)
    assert [c.version for c in histories[0]] == list(range(newest - CATCH_UP_CHAIN, newest + 1))


def test_a_replay_prefers_the_first_change_given_for_a_version() -> None:
    kept = BalanceChange("a", 4, "EUR", 1, 0)
    histories = changes_to_replay([kept, change("a", 4)], lambda account, v: False)
    assert histories == [[kept]]


async def test_a_repair_replays_every_partition_for_the_accounts_of_its_slots(
    applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    slots = {"moved": 7, "stayed": 9, "also-moved": 7}
    sync = BalanceEventSync(applier=applier, outbox=outbox, partitions=2, catch_up_window_s=60,
                            applied_versions=AppliedVersions(), slot_of=slots.__getitem__)
    outbox.rows += [(0, outbox_row("moved", 4)), (1, outbox_row("stayed", 5)),
                    (1, outbox_row("also-moved", 6))]
    sync.request_repair({7})
    assert sync.catch_up_wanted
    await sync.catch_up_once()
    assert sorted(applier.applied) == [("also-moved", 6), ("moved", 4)]
    assert outbox.queries == 1


async def test_a_repair_cuts_a_failed_rounds_backoff_short(
    applier: RecordingApplier, outbox: FakeOutboxReader
) -> None:
    """A round that failed waits before retrying (a minute here); a topology event (the reason
    it failed is gone) starts the next one at once, and the round that succeeds leaves nothing
    behind."""
    sync = BalanceEventSync(applier=applier, outbox=outbox, partitions=2, catch_up_window_s=60,
                            first_backoff_s=60, max_backoff_s=60,
                            applied_versions=AppliedVersions())
    outbox.rows.append((0, outbox_row("a", 3)))
    applier.failing = True
    sync.subscribed(0)
    sync.subscribed(1)
    loop = asyncio.create_task(sync.catch_up_forever())
    try:
        failed = metric_value("catch_up_failed")
        await eventually(lambda: metric_value("catch_up_failed") == failed + 1)
        assert "a" in sync.pending and sync.catch_up_wanted  # kept, and asked for again
        applier.failing = False
        sync.request_repair(set())
        await sync.wait_caught_up(timeout_s=5)
        assert ("a", 3) in applier.applied and sync.pending == {}
        assert metric_value("catch_up_failed") == failed + 1
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


def metric_value(outcome: str) -> float:
    return REGISTRY.get_sample_value("bank_events_total", {"outcome": outcome}) or 0.0


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)
