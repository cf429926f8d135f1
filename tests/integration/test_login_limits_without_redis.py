"""Login while Redis is away: it works, and its brute-force limits are kept in PostgreSQL with the
rules the Redis limiter has (services/auth/service_layer/login_limits.py). The PostgreSQL limiter
alone on the shared database, then the auth service with every Redis node stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import auth_pb2, auth_pb2_grpc
from psycopg import AsyncConnection

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.auth.adapters.login_limiter import address_counter_key, email_counter_key
from services.auth.adapters.pg_login_limiter import PostgresLoginLimiter
from services.auth.bootstrap import build_auth_app
from shared.config import Settings
from shared.errors import ResourceExhausted
from shared.pg_pool import create_pool
from tests.conftest import settings_for
from tests.support.account import metric
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.rpc import rpc_error

pytestmark = pytest.mark.integration


async def test_postgres_counters_reserve_refuse_release_and_start_a_new_window(
    base_settings: Settings, unique: Callable[[str], str],
) -> None:
    pool = create_pool(base_settings, size=2)
    await pool.open()
    try:
        limiter = PostgresLoginLimiter(pool, max_failures=3, window_s=2)
        email, address = unique("pg") + "@example.com", random_address()
        held = [await limiter.reserve(email, address) for _ in range(3)]
        assert all(len(r.keys) == 2 for r in held)
        fresh = random_address()
        with pytest.raises(ResourceExhausted) as refused:
            await limiter.reserve(email, fresh)  # the email is used up
        assert 1 <= refused.value.retry_after_s <= 2
        assert await attempts(base_settings, address_counter_key(fresh)) == 0  # given back
        await limiter.release(held[0])  # a success gives its slot back
        await limiter.reserve(email, random_address())
        with pytest.raises(ResourceExhausted):
            await limiter.reserve(email, random_address())

        async with await AsyncConnection.connect(base_settings.database_url,
                                                 autocommit=True) as conn:
            await conn.execute("UPDATE login_attempt_windows SET window_ends_at = now()"
                               " WHERE counter_key = %s", (email_counter_key(email),))
        await limiter.reserve(email, random_address())  # the window ended: a new one
        assert await attempts(base_settings, email_counter_key(email)) == 1
    finally:
        await pool.close()


async def test_login_works_while_redis_is_down_and_its_limits_hold(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster,
    unique: Callable[[str], str],
) -> None:
    app = build_auth_app(auth_settings(settings_for(postgres, private_redis_cluster),
                                       login_max_failures=3), port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            email = unique("outage") + "@example.com"
            await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD,
                                                         name="O"))
            await asyncio.to_thread(private_redis_cluster.stop_all_nodes)
            fallbacks = metric("bank_redis_fallbacks_total", component="login_limit",
                               reason="unavailable")

            def attempt(password: str) -> grpc.aio.UnaryUnaryCall:
                return auth.Login(auth_pb2.LoginRequest(email=email, password=password),
                                  metadata=(("x-forwarded-for", random_address()),))

            assert (await attempt(PASSWORD)).token  # Redis down, login up
            assert (await attempt(PASSWORD)).token  # a success does not count
            for n in range(3):
                err = await rpc_error(attempt(f"wrong guess {n}"))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            locked = await rpc_error(attempt(PASSWORD))
            assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry-after" in dict(locked.trailing_metadata() or ())
            assert metric("bank_redis_fallbacks_total", component="login_limit",
                          reason="unavailable") + metric(
                "bank_redis_fallbacks_total", component="login_limit",
                reason="circuit_open") > fallbacks
    finally:
        await app.stop()


async def attempts(settings: Settings, counter_key: str) -> int | None:
    async with await AsyncConnection.connect(settings.database_url) as conn:
        row = await (await conn.execute(
            "SELECT attempts FROM login_attempt_windows WHERE counter_key = %s", (counter_key,)
        )).fetchone()
    return None if row is None else int(row[0])
