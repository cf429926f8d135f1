"""Transfer use cases, the event dispatcher and the relay, on the in-memory fakes."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from services.transfer.adapters.fakes import (
    FakeAccount,
    FakeEventPublisher,
    FakeOutboxStore,
    FakeReadYourWritesFloors,
    FakeTransferRepository,
)
from services.transfer.domain import OutboxEvent, TransferOutcome
from services.transfer.service_layer.event_dispatcher import EventDispatcher
from services.transfer.service_layer.outbox_relay import OutboxRelay, relay_once
from services.transfer.service_layer.transfers import TransferService, transfer_page_tokens
from shared.auth_context import Caller
from shared.errors import BankError
from tests.support.account import metric

ALICE, BOB = Caller("alice", "s1"), Caller("bob", "s2")


FLOORS = FakeReadYourWritesFloors()
TEST_PAGE_TOKEN_KEY = bytes(range(32))


def ids() -> tuple[str, str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


def world(after_commit=None):  # type: ignore[no-untyped-def]
    a1, a2, b1 = ids()
    repo = FakeTransferRepository(accounts={
        a1: FakeAccount("alice", balance=1_000), a2: FakeAccount("alice"),
        b1: FakeAccount("bob", balance=50),
    })
    publisher, store = FakeEventPublisher(), FakeOutboxStore()
    dispatcher = EventDispatcher(publisher, store)
    service = TransferService(repo, dispatcher, FLOORS, max_amount=10_000, event_partitions=16,
                              page_tokens=transfer_page_tokens(TEST_PAGE_TOKEN_KEY),
                              after_commit=after_commit)
    return service, repo, dispatcher, publisher, store, (a1, a2, b1)


async def test_a_transfer_moves_money_and_its_events_are_published_then_marked() -> None:
    service, repo, dispatcher, publisher, store, (a1, a2, _) = world()
    dispatcher.start()
    try:
        transfer = await service.create_transfer(
            ALICE, from_account_id=a1, to_account_id=a2, amount=300, currency="EUR",
            idempotency_key="k", description="",
        )
        await dispatcher.stop()
    finally:
        await dispatcher.stop()
    assert transfer.source_balance is not None
    assert (transfer.source_balance.minor_units, transfer.source_balance.version) == (700, 2)
    assert repo.accounts[a2].balance == 300
    assert [e.outbox_id for e in publisher.published] == store.marked
    assert len(store.marked) == 2
    # Every session of the writer reads both accounts at least at their new versions.
    assert FLOORS.floors[ALICE.user_id][a1] == 2
    assert FLOORS.floors[ALICE.user_id][a2] == 2


async def test_a_retry_replays_and_moves_nothing_twice() -> None:
    service, repo, _, _, _, (a1, a2, _) = world()
    first = await service.create_transfer(ALICE, from_account_id=a1, to_account_id=a2,
                                          amount=300, currency="EUR", idempotency_key="k",
                                          description="")
    again = await service.create_transfer(ALICE, from_account_id=a1, to_account_id=a2,
                                          amount=300, currency="EUR", idempotency_key="k",
                                          description="")
    assert again == first
    assert repo.accounts[a1].balance == 700


async def test_validation_errors_never_reach_the_repository() -> None:
    service, repo, *_ = world()
    with pytest.raises(BankError) as caught:
        await service.create_transfer(ALICE, from_account_id="x", to_account_id="y",
                                      amount=1, currency="EUR", idempotency_key="k",
                                      description="")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert repo.calls == 0


async def test_rejections_become_errors_and_are_replayed() -> None:
    service, repo, _, _, _, (_, a2, b1) = world()
    for _ in range(2):
        with pytest.raises(BankError) as caught:
            await service.create_transfer(BOB, from_account_id=b1, to_account_id=a2,
                                          amount=60, currency="EUR", idempotency_key="k",
                                          description="")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    repo.accounts[b1].balance = 1_000  # money arrives: the stored answer still stands
    with pytest.raises(BankError) as again:
        await service.create_transfer(BOB, from_account_id=b1, to_account_id=a2, amount=60,
                                      currency="EUR", idempotency_key="k", description="")
    assert "insufficient funds" in again.value.message
    assert repo.accounts[a2].balance == 0


async def test_a_crash_after_commit_leaves_the_events_to_the_relay() -> None:
    def crash(outcome: TransferOutcome) -> None:
        raise RuntimeError("simulated crash after commit")

    service, repo, dispatcher, publisher, _, (a1, a2, _) = world(after_commit=crash)
    with pytest.raises(RuntimeError):
        await service.create_transfer(ALICE, from_account_id=a1, to_account_id=a2, amount=1,
                                      currency="EUR", idempotency_key="k", description="")
    assert repo.accounts[a2].balance == 1  # committed
    assert publisher.published == []  # never handed to the dispatcher


async def test_list_pages_newest_first_without_duplicates() -> None:
    service, _, _, _, _, (a1, a2, _) = world()
    made = []
    for n in range(5):
        made.append(await service.create_transfer(
            ALICE, from_account_id=a1, to_account_id=a2, amount=1, currency="EUR",
            idempotency_key=f"k{n}", description="",
        ))
        await asyncio.sleep(0.001)
    seen, token = [], ""
    while True:
        page = await service.list_transfers(ALICE, 2, token)
        seen += [t.transfer_id for t in page.transfers]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.transfer_id for t in reversed(made)]
    assert (await service.list_transfers(BOB, 0, "")).transfers == []


async def test_the_dispatcher_leaves_rows_unmarked_when_redis_refuses() -> None:
    publisher, store = FakeEventPublisher(failing=True), FakeOutboxStore()
    dispatcher = EventDispatcher(publisher, store)
    await dispatcher.dispatch([OutboxEvent(1, 0, b"x")])
    await dispatcher.confirm_published()
    assert store.marked == []


async def test_events_redis_refused_go_out_once_it_answers_again() -> None:
    """A hung or failing-over Redis refuses a publish: the service publishes the events again
    itself as soon as Redis answers, not seconds later through the relay; up to a bound."""
    publisher, store = FakeEventPublisher(failing=True), FakeOutboxStore()
    dispatcher = EventDispatcher(publisher, store, retry_interval_s=0.01, max_retained=3)
    dispatcher.start()
    try:
        dispatcher.submit([OutboxEvent(i, 0, b"x") for i in range(1, 6)])
        await asyncio.sleep(0.05)  # refused, retried, refused again
        assert publisher.published == []
        publisher.failing = False
        while len(publisher.published) < 3:
            await asyncio.sleep(0.005)
        # The two oldest were beyond the bound: the relay delivers those.
        assert sorted(e.outbox_id for e in publisher.published) == [3, 4, 5]
        assert dispatcher.unconfirmed == 3
    finally:
        await dispatcher.stop()


async def test_many_transfers_are_confirmed_in_one_statement() -> None:
    """The request path ends at the commit: publishing happens at once, and every row published
    since the last confirmation is confirmed by one statement."""
    service, _, dispatcher, publisher, store, (a1, a2, _) = world()
    dispatcher.start()
    try:
        for n in range(20):
            await service.create_transfer(ALICE, from_account_id=a1, to_account_id=a2, amount=1,
                                          currency="EUR", idempotency_key=f"k{n}",
                                          description="")
        while len(publisher.published) < 40:
            await asyncio.sleep(0.001)
        assert store.statements == 0  # published, not yet confirmed: nothing on the path
        assert dispatcher.unconfirmed == 40
        await dispatcher.confirm_published()
        assert store.statements == 1
        assert sorted(store.marked) == sorted(e.outbox_id for e in publisher.published)
    finally:
        await dispatcher.stop()


async def test_a_failed_confirmation_is_kept_for_the_next_one() -> None:
    publisher, store = FakeEventPublisher(), FakeOutboxStore(failing=True)
    dispatcher = EventDispatcher(publisher, store)
    await dispatcher.dispatch([OutboxEvent(1, 0, b"x"), OutboxEvent(2, 1, b"y")])
    await dispatcher.confirm_published()  # PostgreSQL refuses: never raised
    assert dispatcher.unconfirmed == 2
    store.failing = False
    await dispatcher.confirm_published()
    assert (store.marked, store.statements, dispatcher.unconfirmed) == ([1, 2], 1, 0)


async def test_stopping_confirms_what_was_published() -> None:
    service, _, dispatcher, publisher, store, (a1, a2, _) = world()
    dispatcher.start()
    await service.create_transfer(ALICE, from_account_id=a1, to_account_id=a2, amount=1,
                                  currency="EUR", idempotency_key="k", description="")
    await dispatcher.stop()
    assert len(publisher.published) == 2
    assert sorted(store.marked) == sorted(e.outbox_id for e in publisher.published)


async def test_the_relay_sends_nothing_the_service_already_published() -> None:
    """The service died between its publish and its confirmation: the relay confirms the rows
    and the events go out once."""
    publisher = FakeEventPublisher()
    events = [OutboxEvent(i, i % 16, b"x") for i in range(1, 5)]
    dead = EventDispatcher(publisher, FakeOutboxStore())
    await dead.dispatch(events)  # published; the confirmation never comes
    store = FakeOutboxStore(rows=list(events))
    assert await OutboxRelay(store, publisher).run_cycle() == 4
    assert store.rows == [] and sorted(store.marked) == [1, 2, 3, 4]
    assert [e.outbox_id for e in publisher.published] == [1, 2, 3, 4]


async def test_the_dispatcher_drops_overflow_instead_of_blocking() -> None:
    dispatcher = EventDispatcher(FakeEventPublisher(), FakeOutboxStore(), max_queue=2)
    dropped = metric("bank_events_total", outcome="dispatch_dropped")
    dispatcher.submit([OutboxEvent(i, 0, b"x") for i in range(5)])  # not started: queue fills
    assert metric("bank_events_total", outcome="dispatch_dropped") == dropped + 3  # for the relay
    await dispatcher.stop()


async def test_the_relay_publishes_stale_rows_in_batches_and_marks_them() -> None:
    store = FakeOutboxStore(rows=[OutboxEvent(i, i % 16, b"x") for i in range(1, 8)])
    publisher = FakeEventPublisher()
    assert await relay_once(store, publisher, min_age_s=0, limit=5) == (5, 5)
    relay = OutboxRelay(store, publisher, batch_size=5)
    assert await relay.run_cycle() == 2
    assert store.rows == []
    assert sorted(store.marked) == list(range(1, 8))


async def test_the_relay_stops_a_cycle_when_redis_refuses() -> None:
    store = FakeOutboxStore(rows=[OutboxEvent(1, 0, b"x")])
    relay = OutboxRelay(store, FakeEventPublisher(failing=True), batch_size=1)
    assert await relay.run_cycle() == 0
    assert len(store.rows) == 1
