"""Balance-changed events over Redis sharded pub/sub on the real cluster: applied to the cache,
and recovered from the outbox when messages are lost (disconnect, killed connection, gap)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from bank.v1 import account_pb2, account_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.redis_cluster import LocalRedisCluster
from services.account.adapters.balance_changed import change_from_event
from services.account.service_layer.balance_events import BalanceEventApplier
from services.account.service_layer.cache_layout import balance_key, recent_key
from services.account.service_layer.dependencies import CacheTtls
from services.transfer.adapters.event_publisher import sequence_key
from shared.cache.backend import WriteOutcome
from shared.config import Settings
from shared.events import decode_balance_changed, partition_of
from tests.support.account import (
    Customer,
    account_settings,
    cached_entry,
    counting,
    eventually,
    metric,
    new_customer,
    publish_newest_events,
    serving,
)

pytestmark = pytest.mark.integration

CACHE = account_pb2.READ_SOURCE_CACHE
DATABASE = account_pb2.READ_SOURCE_DATABASE


async def warm(stub: account_pb2_grpc.AccountServiceStub, customer: Customer) -> None:
    await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=customer.account_id),
                          metadata=customer.metadata)
    await stub.ListRecentTransactions(
        account_pb2.ListRecentTransactionsRequest(account_id=customer.account_id),
        metadata=customer.metadata)


def at_version(redis: RedisCluster, key: str, version: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        entry = await cached_entry(redis, key)
        return entry is not None and entry.version == version

    return check


async def test_a_published_event_updates_the_cached_balance_in_place(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    async with serving(account_settings(base_settings)) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000)
        await warm(stub, alice)
        applied = metric("bank_events_total", outcome="applied")
        lag_count = metric("bank_event_lag_seconds_count")
        await seed.deposit(engine, alice.account_id, 250)
        await publish_newest_events(engine, app.settings, [alice.account_id])
        await eventually(at_version(app.redis, balance_key(alice.account_id), 3))
        balance = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account_id=alice.account_id), metadata=alice.metadata)
        assert (balance.source, balance.version, balance.balance.minor_units) == (CACHE, 3, 1_250)
        # The list was cached at version 2: the event's entry is added in place, no miss.
        recent = await stub.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=alice.account_id),
            metadata=alice.metadata)
        assert (recent.source, recent.version, len(recent.entries)) == (CACHE, 3, 2)
        assert [e.amount.minor_units for e in recent.entries] == [250, 1_000]
        assert metric("bank_events_total", outcome="applied") >= applied + 1
        assert metric("bank_event_lag_seconds_count") >= lag_count + 1


async def test_events_missed_while_disconnected_are_corrected_within_2s_of_reconnecting(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    async with serving(account_settings(base_settings)) as (app, stub):
        assert app.events is not None
        customers = [await new_customer(engine, unique, deposit=1_000) for _ in range(3)]
        for customer in customers:
            await warm(stub, customer)
        await app.events.stop()  # the subscriber is gone...
        for customer in customers:  # ...while transfers commit and publish
            await seed.deposit(engine, customer.account_id, 100)
        await publish_newest_events(engine, app.settings, [c.account_id for c in customers])
        await asyncio.sleep(0.2)
        for customer in customers:  # nobody heard those messages
            assert await at_version(app.redis, balance_key(customer.account_id), 2)()

        await app.events.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for customer in customers:
            await eventually(at_version(app.redis, balance_key(customer.account_id), 3))
            await eventually(at_version(app.redis, recent_key(customer.account_id), 3))
        assert loop.time() - started < 2.0
        for customer in customers:
            reply = await stub.GetBalance(
                account_pb2.GetBalanceRequest(account_id=customer.account_id),
                metadata=customer.metadata)
            assert (reply.source, reply.balance.minor_units) == (CACHE, 1_100)


async def test_a_killed_subscriber_connection_reconnects_and_catches_up(
    base_settings: Settings, redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    async with serving(account_settings(base_settings)) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000)
        await warm(stub, alice)
        reconnects = metric("bank_events_total", outcome="reconnect")
        await seed.deposit(engine, alice.account_id, 10)  # its message is lost: never published
        for port in redis_cluster.masters():
            with redis_cluster.client(port) as node:
                node.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(at_version(app.redis, balance_key(alice.account_id), 3))
        assert loop.time() - started < 2.0
        assert metric("bank_events_total", outcome="reconnect") > reconnects
        # And the new subscription delivers live events again.
        await seed.deposit(engine, alice.account_id, 10)
        await publish_newest_events(engine, app.settings, [alice.account_id])
        await eventually(at_version(app.redis, balance_key(alice.account_id), 4), timeout_s=2)


async def test_a_sequence_gap_catches_up_from_the_outbox(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
    redis_admin: RedisCluster,
) -> None:
    partitions = base_settings.event_partitions
    async with serving(account_settings(base_settings)) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000)
        partition = partition_of(alice.account_id, partitions)
        bob = await new_customer(engine, unique, deposit=0)
        while partition_of(bob.account_id, partitions) != partition:  # same partition as Alice
            bob = await new_customer(engine, unique, deposit=0)
        await seed.deposit(engine, bob.account_id, 1)
        await warm(stub, alice)
        publish = publish_newest_events
        # The consumer's sequence baseline:
        await publish(engine, app.settings, [bob.account_id])
        await eventually(at_version(app.redis, recent_key(bob.account_id), 2))
        gaps = metric("bank_events_total", outcome="gap")

        await seed.deposit(engine, alice.account_id, 5)
        await redis_admin.incr(sequence_key(partition))  # Alice's message: sent, never received
        await asyncio.sleep(0.1)
        assert await at_version(app.redis, balance_key(alice.account_id), 2)()
        await seed.deposit(engine, bob.account_id, 1)
        # The next message shows the gap:
        await publish(engine, app.settings, [bob.account_id])
        await eventually(at_version(app.redis, balance_key(alice.account_id), 3), timeout_s=2)
        assert metric("bank_events_total", outcome="gap") == gaps + 1


async def test_a_read_right_after_a_transfer_waits_for_its_event_and_hits_the_cache(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    """Read-your-writes without the database: the cached entry is one version behind, the event
    is in flight; the read waits for the consumer to apply it, then reads the cache again."""
    readers, wrap = counting()
    # Generous: the event is published only once the test has seen the read waiting.
    settings = account_settings(base_settings, min_version_wait_ms=5_000)
    async with serving(settings, wrap_reader=wrap) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000, redis=app.redis_pipeline)
        await warm(stub, alice)  # cached at version 2
        loads = readers[0].loads["balance"]
        hits_after_wait = metric("bank_cache_requests_total", kind="balance",
                                 result="hit_after_wait")
        await seed.deposit(engine, alice.account_id, 250)  # commits version 3...
        read = asyncio.ensure_future(stub.GetBalance(
            account_pb2.GetBalanceRequest(account_id=alice.account_id, min_version=3),
            metadata=alice.metadata))

        async def waiting() -> bool:
            return app.applied_versions.waiting(alice.account_id) == 1

        await eventually(waiting)
        await publish_newest_events(engine, app.settings, [alice.account_id])  # ...its event
        reply = await read
        assert (reply.source, reply.version, reply.balance.minor_units) == (CACHE, 3, 1_250)
        assert readers[0].loads["balance"] == loads  # PostgreSQL was not asked
        assert metric("bank_cache_requests_total", kind="balance",
                      result="hit_after_wait") == hits_after_wait + 1


async def test_a_read_whose_event_does_not_come_in_time_reads_through(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    readers, wrap = counting()
    settings = account_settings(base_settings, min_version_wait_ms=50)
    async with serving(settings, wrap_reader=wrap) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000, redis=app.redis_pipeline)
        await warm(stub, alice)
        loads = readers[0].loads["balance"]
        expired = metric("bank_cache_requests_total", kind="balance",
                         result="version_wait_expired")
        await seed.deposit(engine, alice.account_id, 250)  # its event is never published
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account_id=alice.account_id, min_version=3),
            metadata=alice.metadata)
        assert loop.time() - started >= 0.05
        assert (reply.source, reply.version, reply.balance.minor_units) == (DATABASE, 3, 1_250)
        assert readers[0].loads["balance"] == loads + 1
        assert metric("bank_cache_requests_total", kind="balance",
                      result="version_wait_expired") == expired + 1
        assert app.applied_versions.waiting(alice.account_id) == 0
        # The read-through filled version 3: the next such read is a plain hit.
        again = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account_id=alice.account_id, min_version=3),
            metadata=alice.metadata)
        assert (again.source, again.version) == (CACHE, 3)


async def outbox_payloads(engine: AsyncEngine, account_id: str) -> list[bytes]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT payload FROM outbox WHERE aggregate_id = CAST(:a AS uuid) ORDER BY id"),
            {"a": account_id},
        )).scalars().all()
    return [bytes(r) for r in rows]


async def recent_from_database(
    stub: account_pb2_grpc.AccountServiceStub, redis: RedisCluster, customer: Customer
) -> account_pb2.ListRecentTransactionsReply:
    await redis.delete(recent_key(customer.account_id))
    reply = await stub.ListRecentTransactions(
        account_pb2.ListRecentTransactionsRequest(account_id=customer.account_id),
        metadata=customer.metadata)
    assert reply.source == DATABASE
    return reply


async def test_a_transfer_event_keeps_the_recent_list_warm_and_equal_to_the_database(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    async with serving(account_settings(base_settings)) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000, redis=app.redis_pipeline)
        for amount in range(101, 111):  # 11 entries: the list holds the newest 10
            await seed.deposit(engine, alice.account_id, amount, description=f"d{amount}")
        await warm(stub, alice)  # cached at version 12
        await seed.deposit(engine, alice.account_id, 777, description="caf\u00e9, \"quoted\"\n")
        await publish_newest_events(engine, app.settings, [alice.account_id])
        await eventually(at_version(app.redis, recent_key(alice.account_id), 13))
        cached = await stub.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=alice.account_id, min_version=13),
            metadata=alice.metadata)
        assert (cached.source, cached.version, len(cached.entries)) == (CACHE, 13, 10)
        assert (cached.entries[0].amount.minor_units, cached.entries[0].description) == (
            777, "caf\u00e9, \"quoted\"\n")
        assert cached.entries[0].balance_after.minor_units == 1_000 + sum(range(101, 111)) + 777
        from_database = await recent_from_database(stub, app.redis, alice)
        assert list(from_database.entries) == list(cached.entries)


async def test_an_event_after_a_missed_one_tombstones_the_list(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    """Never skip an entry: the list is at version 2, the event is version 4 (the event of
    version 3 is not applied yet): the list is dropped, and version 3's event then is stale."""
    async with serving(account_settings(base_settings)) as (app, stub):
        alice = await new_customer(engine, unique, deposit=1_000, redis=app.redis_pipeline)
        await warm(stub, alice)
        await app.events.stop()  # type: ignore[union-attr]
        await seed.deposit(engine, alice.account_id, 10)
        await seed.deposit(engine, alice.account_id, 20)
        newest = await outbox_payloads(engine, alice.account_id)
        applier = BalanceEventApplier(app.cache, CacheTtls(60, 120, 300, 0.1))
        outcomes = await applier.apply(change_from_event(decode_balance_changed(
            newest[-1])))  # version 4
        assert outcomes == [WriteOutcome.UPDATED, WriteOutcome.TOMBSTONED]
        assert await applier.apply(change_from_event(decode_balance_changed(
            newest[-2]))) == [WriteOutcome.STALE, WriteOutcome.STALE]
        again = await applier.apply(change_from_event(decode_balance_changed(
            newest[-1])))
        assert again == [WriteOutcome.STALE, WriteOutcome.STALE]  # a duplicate: nothing changes
        entry = await cached_entry(app.redis, recent_key(alice.account_id))
        assert entry is not None and entry.tombstone and entry.version == 4
