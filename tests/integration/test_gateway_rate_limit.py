"""Rate limits shared by gateway replicas through one Lua script in Redis: exact under
concurrency, 429 with Retry-After and RateLimit headers, per user and per client address, and a
per-replica fallback when Redis is unreachable."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from bank.v1 import auth_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.gateway.bootstrap import serve_gateway
from services.gateway.fakes import FakeBankServer
from services.gateway.session_gate import user_limit_key
from shared.config import Settings
from shared.redis_client import create_redis_cluster
from shared.sessions import NewSession, SessionStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def session(base_settings: Settings, engine: AsyncEngine,
                  unique: Callable[[str], str]) -> AsyncIterator[NewSession]:
    redis = create_redis_cluster(base_settings)
    try:
        user = await seed.create_user(engine, unique("rl") + "@example.com", "pw", "Limited",
                                      password_hash="!")
        yield await SessionStore(engine, redis, 900).create(user)
    finally:
        await redis.aclose()


async def test_150_concurrent_requests_over_two_replicas_admit_exactly_100(
    base_settings: Settings, fake_bank: FakeBankServer, session: NewSession
) -> None:
    # Both replicas and the client share this test's event loop; a generous Redis timeout keeps
    # loop lag under the burst from being mistaken for a Redis outage (which fails open).
    settings = dataclasses.replace(base_settings, rate_limit_per_minute=100,
                                   redis_timeout_ms=3000)
    headers = {"Authorization": f"Bearer {session.token}"}
    limits = httpx.Limits(max_connections=150, max_keepalive_connections=150)
    async with serve_gateway(settings, targets=fake_bank.targets()) as one, \
            serve_gateway(settings, targets=fake_bank.targets()) as two, \
            httpx.AsyncClient(limits=limits, timeout=30) as http:
        urls = [f"{gw.url}/v1/accounts/acc/balance" for gw in (one, two)]
        replies = await asyncio.gather(
            *(http.get(urls[i % 2], headers=headers) for i in range(150))
        )
        redis = create_redis_cluster(base_settings)
        try:
            ttl_ms = await redis.pttl(user_limit_key(session.user_id))
        finally:
            await redis.aclose()
    statuses = Counter(reply.status_code for reply in replies)
    assert statuses == {200: 100, 429: 50}
    for reply in replies:
        assert reply.headers["ratelimit-policy"] == '"user";q=100;w=60'
        if reply.status_code == 429:
            assert 1 <= int(reply.headers["retry-after"]) <= 60
            assert reply.headers["ratelimit"].startswith('"user";r=0;t=')
            assert reply.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert 0 < ttl_ms <= 60_000  # the counter always expires


async def test_public_routes_are_limited_per_client_address(
    base_settings: Settings, fake_bank: FakeBankServer
) -> None:
    settings = dataclasses.replace(base_settings, rate_limit_per_minute=5)
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    async with serve_gateway(settings, targets=fake_bank.targets()) as gw, \
            httpx.AsyncClient(base_url=gw.url) as http:
        async def login(client_address: str) -> httpx.Response:
            return await http.post("/v1/auth/login", json={"email": "x@example.com"},
                                   headers={"X-Forwarded-For": client_address})

        statuses = [(await login(address)).status_code for _ in range(7)]
        other = await login(address.rsplit(".", 1)[0] + ".255")
        limited = await login(address)
    assert statuses == [200] * 5 + [429] * 2
    assert other.status_code == 200
    assert limited.headers["ratelimit-policy"] == '"address";q=5;w=60'
    assert int(limited.headers["retry-after"]) >= 1


async def test_without_redis_sessions_go_to_the_auth_service_and_limits_stay_local(
    base_settings: Settings, fake_bank: FakeBankServer, session: NewSession
) -> None:
    validated: list[str] = []

    async def validate(request: Message, context: grpc.aio.ServicerContext) -> Message:
        assert isinstance(request, auth_pb2.ValidateSessionRequest)
        validated.append(request.token)
        return auth_pb2.ValidateSessionResponse(user_id=session.user_id,
                                                session_id=session.session_id)

    fake_bank.behaviours["/bank.v1.AuthService/ValidateSession"] = validate
    # Nothing listens on port 1: every Redis call fails at once.
    settings = dataclasses.replace(base_settings, redis_nodes="127.0.0.1:1",
                                   rate_limit_per_minute=4)
    try:
        async with serve_gateway(settings, targets=fake_bank.targets()) as gw, \
                httpx.AsyncClient(base_url=gw.url) as http:
            statuses = [
                (await http.get("/v1/accounts/a/balance",
                                headers={"Authorization": f"Bearer {session.token}"})).status_code
                for _ in range(6)
            ]
            metrics = (await http.get("/metrics")).text
    finally:
        fake_bank.behaviours.clear()
    assert statuses == [200] * 4 + [429] * 2
    assert validated == [session.token] * 6
    assert 'bank_gateway_redis_fallbacks_total{reason="circuit_open"}' in metrics
