"""The gRPC status -> HTTP status table, one test per code, through a real gRPC upstream (the
fake bank server aborts with the code) and a real gateway. The error body is google.rpc.Status
JSON; messages of client errors pass through, those of server errors do not."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.gateway.bootstrap import RunningGateway, serve_gateway
from services.gateway.fakes import FakeBankServer
from shared.config import Settings
from shared.redis_client import create_redis_cluster
from shared.sessions import SessionStore

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"

TABLE = [
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    # Everything the table does not name is a 500.
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.DATA_LOSS, 500),
    (grpc.StatusCode.UNIMPLEMENTED, 500),
    (grpc.StatusCode.CANCELLED, 500),
]


@pytest.fixture(scope="module")
async def gateway(base_settings: Settings, fake_bank: FakeBankServer
                  ) -> AsyncIterator[RunningGateway]:
    # Few retries' worth of deadline: UNAVAILABLE on an idempotent read is retried, then mapped.
    settings = dataclasses.replace(base_settings, rate_limit_per_minute=10_000)
    async with serve_gateway(settings, targets=fake_bank.targets()) as running:
        yield running


@pytest.fixture(scope="module")
async def token(base_settings: Settings, engine: AsyncEngine) -> str:
    redis = create_redis_cluster(base_settings)
    try:
        email = f"status-{uuid.uuid4().hex[:12]}@example.com"
        user = await seed.create_user(engine, email, "pw", "Status", password_hash="!")
        return (await SessionStore(engine, redis, 900).create(user)).token
    finally:
        await redis.aclose()


def aborting(code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...] = ()
             ) -> Callable[[Message, grpc.aio.ServicerContext], object]:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(code, message)
        raise AssertionError("unreachable")

    return behaviour


@pytest.mark.parametrize(("code", "http_status"), TABLE, ids=[c.name for c, _ in TABLE])
async def test_status_maps_to_http(
    code: grpc.StatusCode, http_status: int, gateway: RunningGateway, fake_bank: FakeBankServer,
    token: str
) -> None:
    fake_bank.behaviours[BALANCE] = aborting(code, "account acc-9 is closed (detail)")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        reply = await http.get("/v1/accounts/acc-9/balance",
                               headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == http_status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code.value[0]
    if http_status < 500:
        assert body["message"] == "account acc-9 is closed (detail)"
    else:
        assert "acc-9" not in body["message"]  # server-side text stays in the logs


async def test_resource_exhausted_carries_retry_after(
    gateway: RunningGateway, fake_bank: FakeBankServer, token: str
) -> None:
    fake_bank.behaviours[BALANCE] = aborting(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             "too many attempts", (("retry-after", "42"),))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        reply = await http.get("/v1/accounts/a/balance",
                               headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "42"
    assert reply.json()["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}
    ]
