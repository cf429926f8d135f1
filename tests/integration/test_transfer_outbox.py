"""Events after commit: published on Redis sharded pub/sub and marked in the outbox; after a crash
between commit and publish, the relay delivers them; the SQL-built payload is the protobuf the
consumers parse."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import account_pb2, common_pb2, events_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.transfer.bootstrap import build_relay_app
from services.transfer.domain import TransferOutcome
from shared.config import Settings
from shared.events import partition_of
from tests.support.redis_users import for_service
from tests.support.transfer import (
    EventListener,
    new_customer,
    running_transfer_app,
    transfer_request,
)

pytestmark = pytest.mark.integration


async def outbox_rows(engine: AsyncEngine, transfer_id: str) -> list[tuple[int, int, bool]]:
    """(outbox id, partition, published?) of a transfer's events: the outbox row names the
    account, so the transfer is found by its id inside the payload."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT id, partition, published_at IS NOT NULL FROM outbox"
                 " WHERE position(convert_to(:t, 'UTF8') in payload) > 0 ORDER BY id"),
            {"t": transfer_id},
        )).all()
    return [(int(r[0]), int(r[1]), bool(r[2])) for r in rows]


async def wait_until(predicate: Callable[[], object], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_events_are_published_after_commit_and_marked(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=1, deposit=5_000)
    bob = await new_customer(engine, unique)
    async with EventListener(base_settings) as listener, \
            running_transfer_app(base_settings) as (_, stub):
        reply = await stub.CreateTransfer(
            transfer_request(alice.accounts[0], bob.accounts[0], 1_234, unique("k")),
            metadata=alice.metadata,
        )
        events = await listener.wait_for(reply.transfer_id, 2, timeout=5)
        by_account = {e.account_id: e for e in events}
        assert set(by_account) == {alice.accounts[0], bob.accounts[0]}
        source, destination = by_account[alice.accounts[0]], by_account[bob.accounts[0]]
        assert (source.balance.minor_units, source.version) == (3_766, 3)
        assert (destination.balance.minor_units, destination.version) == (1_234, 2)
        assert source.balance.currency == "EUR"
        assert source.partition_sequence > 0 and destination.partition_sequence > 0
        assert source.occurred_at.ToDatetime(dt.UTC) == reply.created_at.ToDatetime(dt.UTC)
        # Each event carries its account's ledger entry (the account cache prepends it).
        assert (source.entry.amount.minor_units, source.entry.balance_after.minor_units,
                source.entry.counterparty_account_id) == (-1_234, 3_766, bob.accounts[0])
        assert (destination.entry.amount.minor_units, destination.entry.account_id,
                destination.entry.counterparty_account_id) == (1_234, bob.accounts[0],
                                                               alice.accounts[0])
        assert source.entry.transfer_id == destination.entry.transfer_id == reply.transfer_id
        assert source.entry.entry_id > 0 and destination.entry.entry_id > 0
        assert source.entry.created_at == source.occurred_at

        async def marked() -> bool:
            rows = await outbox_rows(engine, reply.transfer_id)
            return len(rows) == 2 and all(published for _, _, published in rows)

        await wait_until(marked, timeout=5)
        rows = await outbox_rows(engine, reply.transfer_id)
        partitions = base_settings.event_partitions
        assert {p for _, p, _ in rows} == {partition_of(alice.accounts[0], partitions),
                                           partition_of(bob.accounts[0], partitions)}
        assert {e.outbox_id for e in events} == {i for i, _, _ in rows}


async def test_a_crash_after_commit_is_repaired_by_the_relay(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=1, deposit=5_000)
    bob = await new_customer(engine, unique)
    request = transfer_request(alice.accounts[0], bob.accounts[0], 500, unique("k"))
    committed: list[TransferOutcome] = []

    def crash(outcome: TransferOutcome) -> None:
        committed.append(outcome)
        raise RuntimeError("simulated crash between commit and publish")

    async with EventListener(base_settings) as listener:
        async with running_transfer_app(base_settings, after_commit=crash) as (_, stub):
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await stub.CreateTransfer(request, metadata=alice.metadata)
            assert lost.value.code() == grpc.StatusCode.INTERNAL
        transfer_id = committed[0].transfer.transfer_id  # type: ignore[union-attr]
        await asyncio.sleep(0.5)
        assert listener.for_transfer(transfer_id) == []
        assert [published for _, _, published in await outbox_rows(engine, transfer_id)] == [
            False, False]

        relay = build_relay_app(for_service(base_settings, "relay"),
                                min_age_s=0.2, poll_s=0.1)
        await relay.start()
        try:
            events = await listener.wait_for(transfer_id, 2, timeout=15)
            assert {e.account_id for e in events} == {alice.accounts[0], bob.accounts[0]}

            async def marked() -> bool:
                rows = await outbox_rows(engine, transfer_id)
                return all(published for _, _, published in rows)

            await wait_until(marked, timeout=10)
        finally:
            await relay.stop()

    # The client never got its reply: retrying with the key returns the committed transfer.
    async with running_transfer_app(base_settings) as (_, stub):
        reply = await stub.CreateTransfer(request, metadata=alice.metadata)
    assert reply.transfer_id == transfer_id
    assert reply.source_balance.balance.minor_units == 4_500


async def test_the_sql_payload_is_the_protobuf_consumers_parse(engine: AsyncEngine) -> None:
    account, transfer = uuid.uuid4(), uuid.uuid4()
    when = dt.datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=dt.UTC)
    async with engine.connect() as conn:
        for balance in (0, 1, 127, 128, 300, -1, -123_456_789_012, 2**63 - 1, -(2**63)):
            payload = (await conn.execute(
                text("SELECT balance_changed_payload(CAST(:a AS uuid), 7, :b, 'EUR',"
                     " CAST(:t AS uuid), 300, CAST(:w AS timestamptz))"),
                {"a": str(account), "b": balance, "t": str(transfer), "w": when},
            )).scalar_one()
            expected = events_pb2.BalanceChanged(
                account_id=str(account), version=7, transfer_id=str(transfer), outbox_id=300,
                balance=common_pb2.Money(minor_units=balance, currency="EUR"),
            )
            expected.occurred_at.FromDatetime(when)
            assert bytes(payload) == expected.SerializeToString(), balance


async def test_the_sql_payload_with_its_ledger_entry_is_the_protobuf(engine: AsyncEngine) -> None:
    account, transfer, counterparty = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    when = dt.datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=dt.UTC)
    cases = [(0, 1, 0, ""), (1, -1, 1, "rent"), (300, 128, 2**62, "caf\u00e9 \u20ac"),
             (2**63 - 1, -(2**63), 5, "x" * 200), (-123_456_789_012, 2**63 - 1, 127, "")]
    async with engine.connect() as conn:
        for balance, amount, entry_id, description in cases:
            payload = (await conn.execute(
                text("SELECT balance_changed_payload(CAST(:a AS uuid), 7, :b, 'EUR',"
                     " CAST(:t AS uuid), 300, CAST(:w AS timestamptz), :e, :m,"
                     " CAST(:c AS uuid), :d)"),
                {"a": str(account), "b": balance, "t": str(transfer), "w": when,
                 "e": entry_id, "m": amount, "c": str(counterparty), "d": description},
            )).scalar_one()
            expected = events_pb2.BalanceChanged(
                account_id=str(account), version=7, transfer_id=str(transfer), outbox_id=300,
                balance=common_pb2.Money(minor_units=balance, currency="EUR"),
                entry=account_pb2.LedgerEntry(
                    entry_id=entry_id, account_id=str(account), transfer_id=str(transfer),
                    amount=common_pb2.Money(minor_units=amount, currency="EUR"),
                    balance_after=common_pb2.Money(minor_units=balance, currency="EUR"),
                    counterparty_account_id=str(counterparty), description=description,
                ),
            )
            expected.occurred_at.FromDatetime(when)
            expected.entry.created_at.FromDatetime(when)
            assert bytes(payload) == expected.SerializeToString(), (balance, amount, entry_id)


async def test_a_batch_gets_consecutive_sequences_like_single_publishes(
    base_settings: Settings,
) -> None:
    from services.transfer.adapters.event_publisher import (
        PUBLISH_SCRIPT,
        RedisEventPublisher,
        sequence_key,
    )
    from services.transfer.domain import OutboxEvent
    from shared.events import channel_name
    from shared.redis_client import create_redis_cluster, create_redis_pipeline

    marker = str(uuid.uuid4())
    partition = 3

    def payload(n: int) -> bytes:
        return events_pb2.BalanceChanged(account_id=str(uuid.uuid4()), version=n,
                                         transfer_id=marker, outbox_id=n).SerializeToString()

    redis = create_redis_cluster(base_settings)
    pipeline = create_redis_pipeline(base_settings)
    try:
        async with EventListener(base_settings) as listener:
            published = await RedisEventPublisher(pipeline).publish(
                [OutboxEvent(n, partition, payload(n)) for n in (1, 2, 3)]
                + [OutboxEvent(4, partition + 1, payload(4))]
            )
            assert published == [1, 2, 3, 4]
            await redis.eval(PUBLISH_SCRIPT, 2, sequence_key(partition), channel_name(partition),
                             payload(5))
            events = await listener.wait_for(marker, 5, timeout=5)
            # Once out, an event is not sent again (the partition's published set).
            assert await RedisEventPublisher(pipeline).publish(
                [OutboxEvent(1, partition, payload(1))]) == [1]
    finally:
        await pipeline.close()
        await redis.aclose()
    same_partition = sorted((e for e in events if e.outbox_id != 4), key=lambda e: e.outbox_id)
    assert [e.outbox_id for e in same_partition] == [1, 2, 3, 5]
    first = same_partition[0].partition_sequence
    assert [e.partition_sequence for e in same_partition] == [first, first + 1, first + 2,
                                                              first + 3]
