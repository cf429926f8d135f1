"""Reads when Redis fails: every node stopped, and a master killed mid-traffic. Each test has its
own Redis Cluster (it breaks it); PostgreSQL is the shared one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.account.service_layer.cache_layout import balance_key
from shared.cache import CircuitState
from shared.request_gate import FLOORS_UNSURE_S
from tests.conftest import settings_for
from tests.support.account import (
    Customer,
    account_settings,
    eventually,
    new_customer,
    publish_newest_events,
    serving,
)

pytestmark = pytest.mark.integration

CACHE = account_pb2.READ_SOURCE_CACHE
DATABASE = account_pb2.READ_SOURCE_DATABASE


async def every_read(stub: account_pb2_grpc.AccountServiceStub, customer: Customer) -> list[int]:
    """All account reads once; returns the read sources of the two cached ones."""
    account_id, metadata = customer.account_id, customer.metadata
    balance = await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=account_id),
                                    metadata=metadata)
    recent = await stub.ListRecentTransactions(
        account_pb2.ListRecentTransactionsRequest(account_id=account_id), metadata=metadata)
    account = await stub.GetAccount(account_pb2.GetAccountRequest(account_id=account_id),
                                    metadata=metadata)
    listed = await stub.ListAccounts(account_pb2.ListAccountsRequest(), metadata=metadata)
    history = await stub.ListTransactions(
        account_pb2.ListTransactionsRequest(account_id=account_id), metadata=metadata)
    await stub.ListLoans(account_pb2.ListLoansRequest(), metadata=metadata)
    assert balance.balance.minor_units == account.balance.minor_units
    assert balance.version == recent.version == account.version
    assert [a.account_id for a in listed.accounts] == [account_id]
    assert len(history.entries) == len(recent.entries) >= 1
    return [balance.source, recent.source]


async def test_every_redis_node_stopped_reads_come_from_postgres(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    settings = account_settings(settings_for(postgres, private_redis_cluster),
                                circuit_reset_s=0.3)
    async with serving(settings) as (app, stub):
        alice = await new_customer(engine, unique, deposit=2_000, redis=app.redis_pipeline)
        await every_read(stub, alice)
        assert await every_read(stub, alice) == [CACHE, CACHE]

        await asyncio.to_thread(private_redis_cluster.stop_all_nodes)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(5):
            assert await every_read(stub, alice) == [DATABASE, DATABASE]
        assert loop.time() - started < 5.0  # answered, not hung on a dead cache
        assert app.cache.breaker.state is not CircuitState.CLOSED

        await seed.deposit(engine, alice.account_id, 100)  # a transfer while Redis is down
        assert (await every_read(stub, alice)) == [DATABASE, DATABASE]

        await asyncio.to_thread(private_redis_cluster.start_all_nodes)

        async def cache_used_again() -> bool:
            return await every_read(stub, alice) == [CACHE, CACHE]

        # The restarted nodes lost what they held: for FLOORS_UNSURE_S the user's reads go to
        # PostgreSQL (its read-your-writes floors may be gone), then to the cache again.
        await eventually(cache_used_again, timeout_s=FLOORS_UNSURE_S + 15, interval_s=0.1)
        reply = await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=alice.account_id),
                                      metadata=alice.metadata)
        assert (reply.balance.minor_units, reply.version) == (2_100, 3)


async def test_a_killed_master_fails_over_without_failing_reads(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    settings = account_settings(settings_for(postgres, private_redis_cluster),
                                circuit_reset_s=0.3)
    async with serving(settings) as (app, stub):
        alice = await new_customer(engine, unique, deposit=3_000, redis=app.redis_pipeline)
        request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
        await stub.GetBalance(request, metadata=alice.metadata)
        assert (await stub.GetBalance(request, metadata=alice.metadata)).source == CACHE

        victim = private_redis_cluster.master_for_key(balance_key(alice.account_id))
        private_redis_cluster.kill_node(victim)
        failover = asyncio.create_task(
            asyncio.to_thread(private_redis_cluster.wait_healthy, 30.0))
        sources: list[int] = []
        failures: list[grpc.StatusCode] = []
        while not failover.done():
            try:
                reply = await stub.GetBalance(request, metadata=alice.metadata, timeout=5)
            except grpc.aio.AioRpcError as err:
                failures.append(err.code())
            else:
                assert reply.balance.minor_units == 3_000
                sources.append(reply.source)
            await asyncio.sleep(0.02)
        await failover
        assert failures == []
        assert DATABASE in sources  # the dead master's slot was served from PostgreSQL

        async def hits_resume() -> bool:
            reply = await stub.GetBalance(request, metadata=alice.metadata)
            return bool(reply.source == CACHE)

        # If the user's floors were on the failed master too, PostgreSQL answers for a while.
        await eventually(hits_resume, timeout_s=FLOORS_UNSURE_S + 10, interval_s=0.05)

        # Events flow again on the new topology (the subscriber resubscribed on the new master).
        await seed.deposit(engine, alice.account_id, 1)
        await publish_newest_events(engine, app.settings, [alice.account_id])

        async def updated_by_event() -> bool:
            reply = await stub.GetBalance(request, metadata=alice.metadata)
            return reply.source == CACHE and reply.balance.minor_units == 3_001

        await eventually(updated_by_event, timeout_s=10, interval_s=0.05)
