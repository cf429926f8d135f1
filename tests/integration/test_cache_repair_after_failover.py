"""The cache follows the ledger through a Redis master that dies and stays down: two account
replicas, a transfer service and the outbox relay on a private Redis Cluster, transfers between
two dozen accounts while the master is killed. After the failover every cached balance equals
PostgreSQL within 2 s, and transfers made afterwards reach the cache again. (Before the fix, the
dead master's partitions were not published again until something else refreshed the
publisher's slot layout: the last test holds that cause.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc, transfer_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.account.bootstrap import AccountApp, build_account_app
from services.account.service_layer.cache_layout import balance_key
from services.transfer.adapters.event_publisher import RedisEventPublisher, sequence_key
from services.transfer.bootstrap import build_relay_app, build_transfer_app
from services.transfer.domain import OutboxEvent
from shared.cache import decode_entry
from shared.config import Settings
from shared.redis_pipeline import ClusterPipeline
from tests.conftest import settings_for
from tests.support.account import Customer, eventually, new_customer
from tests.support.db_roles import service_settings
from tests.support.transfer import transfer_request

pytestmark = pytest.mark.integration

ACCOUNTS = 24


@dataclasses.dataclass
class Bank:
    accounts: list[AccountApp]
    transfers: transfer_pb2_grpc.TransferServiceStub
    readers: list[account_pb2_grpc.AccountServiceStub]
    redis: ClusterPipeline


@contextlib.asynccontextmanager
async def running_bank(settings: Settings) -> AsyncIterator[Bank]:
    async with contextlib.AsyncExitStack() as stack:
        accounts = []
        readers = []
        for _ in range(2):
            app = build_account_app(service_settings(settings, "account"),
                                    port=0, health_poll_s=0.2)
            await app.start()
            stack.push_async_callback(app.stop)
            assert app.events is not None
            await app.events.wait_caught_up()
            accounts.append(app)
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
            readers.append(account_pb2_grpc.AccountServiceStub(channel))
        transfer = build_transfer_app(service_settings(settings, "transfer"),
                                      port=0)
        await transfer.start()
        stack.push_async_callback(transfer.stop)
        relay = build_relay_app(service_settings(settings, "relay"))
        await relay.start()
        stack.push_async_callback(relay.stop)
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{transfer.grpc.port}"))
        yield Bank(accounts, transfer_pb2_grpc.TransferServiceStub(channel), readers,
                   accounts[0].redis_pipeline)


async def stale_entries(engine: AsyncEngine, redis: ClusterPipeline,
                        customers: list[Customer]) -> dict[str, tuple[int, int]]:
    """Accounts whose cached balance is not PostgreSQL's: id -> (cached, stored) version.
    An absent entry is not stale (the next read fills it)."""
    stored = await stored_versions(engine, customers)
    stale = {}
    for customer in customers:
        raw = await redis.execute(balance_key(customer.account_id), "GET",
                                  balance_key(customer.account_id))
        entry = decode_entry(raw) if raw is not None else None
        if entry is not None and entry.version != stored[customer.account_id]:
            stale[customer.account_id] = (entry.version, stored[customer.account_id])
    return stale


async def stored_versions(engine: AsyncEngine, customers: list[Customer]) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT id::text, version FROM accounts WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [c.account_id for c in customers]})).all()
    return {account_id: int(version) for account_id, version in rows}


async def transfer_between(bank: Bank, customers: list[Customer], rng: random.Random,
                           count: int) -> int:
    """`count` small transfers between random pairs; returns how many were acknowledged."""
    done = 0
    for _ in range(count):
        source, destination = rng.sample(customers, 2)
        key = str(uuid.uuid4())
        for _attempt in range(5):
            try:
                await bank.transfers.CreateTransfer(
                    transfer_request(source.account_id, destination.account_id, 1, key),
                    metadata=source.metadata, timeout=5)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
                continue
            done += 1
            break
    return done


async def read_all(bank: Bank, customers: list[Customer]) -> None:
    for customer in customers:
        for reader in bank.readers:
            await reader.GetBalance(account_pb2.GetBalanceRequest(account_id=customer.account_id),
                                    metadata=customer.metadata, timeout=5)


async def test_a_master_that_stays_down_leaves_no_stale_balance(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    settings = settings_for(postgres, private_redis_cluster)
    rng = random.Random(12)
    async with running_bank(settings) as bank:
        customers = [await new_customer(engine, unique, deposit=100_000)
                     for _ in range(ACCOUNTS)]
        await read_all(bank, customers)  # every balance cached
        await transfer_between(bank, customers, rng, 40)
        await no_stale_entry_within(engine, bank.redis, customers, timeout_s=5)

        keep_going = asyncio.Event()
        keep_going.set()

        async def workload() -> None:
            while keep_going.is_set():
                await transfer_between(bank, customers, rng, 1)
                await read_all(bank, customers[:4])

        traffic = asyncio.create_task(workload())
        try:
            await asyncio.sleep(1.0)
            victim = private_redis_cluster.masters()[0]
            private_redis_cluster.kill_node(victim)
            await asyncio.to_thread(private_redis_cluster.wait_healthy, 30.0)
        finally:
            keep_going.clear()
            await traffic

        # The failover is over: within 2 s, nothing cached disagrees with PostgreSQL.
        await no_stale_entry_within(engine, bank.redis, customers, timeout_s=2)

        # A transfer from every account after the failover reaches its cache, and every
        # replica's answer is PostgreSQL's.
        for source, destination in zip(customers, customers[1:] + customers[:1], strict=True):
            await bank.transfers.CreateTransfer(
                transfer_request(source.account_id, destination.account_id, 1, str(uuid.uuid4())),
                metadata=source.metadata, timeout=5)
        await no_stale_entry_within(engine, bank.redis, customers, timeout_s=2)
        stored = await stored_versions(engine, customers)
        for customer in customers:
            for reader in bank.readers:
                reply = await reader.GetBalance(
                    account_pb2.GetBalanceRequest(account_id=customer.account_id),
                    metadata=customer.metadata, timeout=5)
                assert reply.version == stored[customer.account_id]


async def no_stale_entry_within(engine: AsyncEngine, redis: ClusterPipeline,
                                customers: list[Customer], timeout_s: float) -> None:
    """Fails with what is still stale when the deadline passes."""
    stale: dict[str, tuple[int, int]] | str = {}

    async def none_stale() -> bool:
        nonlocal stale
        try:
            stale = await stale_entries(engine, redis, customers)
        except Exception as err:  # the test's own client may still be finding the new layout
            stale = repr(err)
        return not stale

    try:
        await eventually(none_stale, timeout_s=timeout_s)
    except pytest.fail.Exception:
        pytest.fail(f"still stale after {timeout_s} s (cached, stored versions): {stale}")


async def test_a_partition_whose_master_died_is_published_on_its_new_master(
    private_redis_cluster: LocalRedisCluster,
) -> None:
    """The root of the long staleness: redis-py's cluster pipeline (the publisher's client
    before) never re-read the slot layout after a connection error, so a dead master's
    partitions failed to publish, from the service and the relay alike, until the entries' TTL
    ran out. The pipelined client finds the new master by itself."""
    cluster = private_redis_cluster
    publisher_client = ClusterPipeline(cluster.startup_nodes, timeout_s=0.1,
                                       credentials=cluster.credentials())
    publisher = RedisEventPublisher(publisher_client)
    partition = 3
    try:
        assert await publisher.publish([OutboxEvent(1, partition, b"")]) == [1]
        victim = cluster.master_for_key(sequence_key(partition))
        await asyncio.to_thread(cluster.kill_node, victim)
        await asyncio.to_thread(cluster.wait_healthy, 30.0)

        async def published() -> bool:
            return await publisher.publish([OutboxEvent(2, partition, b"")]) == [2]

        await eventually(published, timeout_s=2)
    finally:
        await publisher_client.close()
