"""The foundation's vertical slice: GetBalance over a real gRPC channel, reading PostgreSQL, and
the health service following PostgreSQL's availability."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.account.bootstrap import build_account_app
from shared.config import Settings
from tests.conftest import settings_for
from tests.support.sessions import open_session

pytestmark = pytest.mark.integration


async def test_get_balance_over_grpc(
    make_settings: Callable[..., Settings], engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    await seed.ensure_settlement_account(engine)
    user = await seed.create_user(engine, unique("u") + "@example.com", "pw", "Slice User",
                                  password_hash="!")
    account = await seed.create_account(engine, user)
    await seed.deposit(engine, account, 12_345)
    token = await open_session(engine, user)

    app = build_account_app(make_settings(service_name="account"), port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            stub = account_pb2_grpc.AccountServiceStub(channel)
            reply = await stub.GetBalance(
                account_pb2.GetBalanceRequest(account_id=account),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            assert reply.balance.minor_units == 12_345
            assert reply.balance.currency == "EUR"
            assert reply.balance.formatted == "123.45"
            assert reply.version == 2

            with pytest.raises(grpc.aio.AioRpcError) as no_token:
                await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=account))
            assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def ask() -> list[str]:
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for answer in reflection.ServerReflectionInfo(iter([request])):
                    return [s.name for s in answer.list_services_response.service]
                return []

            names = await ask()
            assert "bank.v1.AccountService" in names
            assert "grpc.health.v1.Health" in names
    finally:
        await app.stop()


async def test_health_follows_postgres(
    private_postgres: LocalPostgres, redis_cluster: LocalRedisCluster
) -> None:
    settings = settings_for(private_postgres, redis_cluster, service_name="account")
    app = build_account_app(settings, port=0, health_poll_s=0.2)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status_becomes(expected: int, timeout: float = 20.0) -> None:
                deadline = asyncio.get_running_loop().time() + timeout
                while True:
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service="bank.v1.AccountService")
                    )
                    if reply.status == expected:
                        return
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"health stayed {reply.status}, wanted {expected}"
                    )
                    await asyncio.sleep(0.1)

            await status_becomes(health_pb2.HealthCheckResponse.SERVING)
            await asyncio.to_thread(private_postgres.stop_server)
            await status_becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.to_thread(private_postgres.start_server)
            await status_becomes(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await app.stop()
