"""A pod starts and serves during a Redis outage: readiness asks PostgreSQL only. The account and
auth services are started while every Redis node is down; they report SERVING, answer reads and
logins from PostgreSQL, and use the cache once Redis is back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from tests.conftest import settings_for
from tests.support.account import eventually, new_customer
from tests.support.auth import CHEAP_ARGON2, PASSWORD, random_address
from tests.support.redis_users import for_service

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_services_started_during_an_outage_serve_and_then_use_the_cache(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    settings = dataclasses.replace(settings_for(postgres, private_redis_cluster), **CHEAP_ARGON2)
    alice = await new_customer(engine, unique, deposit=700)
    await asyncio.to_thread(private_redis_cluster.stop_all_nodes)

    account = build_account_app(for_service(settings, "account"), port=0,
                                health_poll_s=0.2)
    auth = build_auth_app(for_service(settings, "auth"), port=0,
                          health_poll_s=0.2)
    await account.start()
    await auth.start()
    try:
        async with (grpc.aio.insecure_channel(f"127.0.0.1:{account.grpc.port}") as a_channel,
                    grpc.aio.insecure_channel(f"127.0.0.1:{auth.grpc.port}") as b_channel):
            for channel in (a_channel, b_channel):
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert reply.status == SERVING
            accounts = account_pb2_grpc.AccountServiceStub(a_channel)
            logins = auth_pb2_grpc.AuthServiceStub(b_channel)
            request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
            reply = await accounts.GetBalance(request, metadata=alice.metadata)
            assert (reply.balance.minor_units, reply.source) == (
                700, account_pb2.READ_SOURCE_DATABASE)
            email = unique("nostart") + "@example.com"
            await logins.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD,
                                                           name="N"))
            assert (await logins.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD),
                                       metadata=(("x-forwarded-for", random_address()),))).token

            await asyncio.to_thread(private_redis_cluster.start_all_nodes)

            async def cached() -> bool:
                reply = await accounts.GetBalance(request, metadata=alice.metadata)
                return bool(reply.source == account_pb2.READ_SOURCE_CACHE)

            await eventually(cached, timeout_s=15, interval_s=0.1)
            assert account.events is not None
            await account.events.wait_subscribed(timeout_s=15)
    finally:
        await auth.stop()
        await account.stop()
