"""The gateway over real HTTP (uvicorn in-process), real Redis Cluster sessions and limits, and a
fake gRPC upstream (FakeBankServer) whose answers each test chooses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from bank.v1 import account_pb2, auth_pb2, common_pb2, transfer_pb2
from google.protobuf.message import Message
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.gateway.bootstrap import RunningGateway, serve_gateway
from services.gateway.fakes import FakeBankServer
from shared.caller_assertion import CALLER_ASSERTION_HEADER, CallerAssertions
from shared.config import Settings
from shared.redis_client import create_redis_cluster
from shared.sessions import NewSession, SessionStore, session_key
from tests.conftest import TEST_CALLER_ASSERTION_KEY

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"
RECENT = "/bank.v1.AccountService/ListRecentTransactions"
CREATE_TRANSFER = "/bank.v1.TransferService/CreateTransfer"
LOGIN = "/bank.v1.AuthService/Login"
VALIDATE = "/bank.v1.AuthService/ValidateSession"


@pytest.fixture(scope="module")
async def redis(base_settings: Settings) -> AsyncIterator[RedisCluster]:
    client = create_redis_cluster(base_settings)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def gateway(base_settings: Settings, fake_bank: FakeBankServer
                  ) -> AsyncIterator[RunningGateway]:
    settings = dataclasses.replace(base_settings, service_name="gateway",
                                   gateway_max_body_bytes=2048, rate_limit_per_minute=1000)
    async with serve_gateway(settings, targets=fake_bank.targets()) as running:
        yield running


@pytest.fixture
async def client(gateway: RunningGateway, fake_bank: FakeBankServer
                 ) -> AsyncIterator[httpx.AsyncClient]:
    fake_bank.behaviours.clear()
    fake_bank.received.clear()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture
async def session(engine: AsyncEngine, redis: RedisCluster,
                  unique: Callable[[str], str]) -> NewSession:
    user = await seed.create_user(engine, unique("gw") + "@example.com", "pw", "Gateway User",
                                  password_hash="!")
    return await SessionStore(engine, redis, 900).create(user)


def bearer(session: NewSession) -> dict[str, str]:
    return {"Authorization": f"Bearer {session.token}"}


def replying(reply: Message) -> Callable[[Message, grpc.aio.ServicerContext], object]:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        return reply

    return behaviour


async def test_fixed_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    document = (await client.get("/openapi.json")).json()
    assert "/v1/accounts/{account_id}/balance" in document["paths"]
    assert "/v1/accounts/{account_id}/transactions:recent" in document["paths"]
    assert not any("ValidateSession" in json.dumps(op) for op in document["paths"].values())
    assert document["paths"]["/v1/auth/login"]["post"]["security"] == []
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "/v1/transfers" in docs.text
    await client.get("/v1/nowhere")
    metrics = (await client.get("/metrics")).text
    assert "bank_gateway_requests_total" in metrics
    assert "bank_gateway_request_seconds_bucket" in metrics


async def test_balance_read_forwards_session_client_and_request_id(
    client: httpx.AsyncClient, fake_bank: FakeBankServer, session: NewSession
) -> None:
    fake_bank.behaviours[BALANCE] = replying(account_pb2.Balance(
        account_id="acc-1", version=7, source=account_pb2.READ_SOURCE_CACHE,
        balance=common_pb2.Money(minor_units=12_345, currency="EUR", formatted="123.45")))
    reply = await client.get(
        "/v1/accounts/acc-1/balance",
        headers={**bearer(session), "X-Forwarded-For": "203.0.113.9, 198.51.100.7",
                 "X-Request-Id": "req-abc", "User-Agent": "tests/1.0"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "accountId": "acc-1", "version": "7", "source": "READ_SOURCE_CACHE",
        "balance": {"minorUnits": "12345", "currency": "EUR", "formatted": "123.45"},
    }
    assert reply.headers["x-request-id"] == "req-abc"
    assert reply.headers["ratelimit-policy"] == '"user";q=1000;w=60'
    assert reply.headers["ratelimit"].startswith('"user";r=')
    method, request, metadata = fake_bank.received[-1]
    assert method == BALANCE and request.account_id == "acc-1"
    # The gateway vouches for the caller with a signed assertion, not the raw token.
    assert "authorization" not in metadata
    vouched = CallerAssertions(TEST_CALLER_ASSERTION_KEY).verify(metadata[CALLER_ASSERTION_HEADER])
    assert (vouched.user_id, vouched.session_id) == (session.user_id, session.session_id)
    assert metadata["x-forwarded-for"] == "198.51.100.7"  # the entry our own proxy appended
    assert metadata["x-request-id"] == "req-abc"
    assert metadata["x-user-agent"] == "tests/1.0"


@pytest.mark.parametrize("header", [
    None, "Basic dXNlcjpwdw==", "Bearer", "Bearer not-a-token",
    "Bearer 00000000-0000-0000-0000-000000000000.00000000-0000-0000-0000-000000000000.x",
])
async def test_missing_or_bad_tokens_get_401(client: httpx.AsyncClient, header: str | None,
                                             fake_bank: FakeBankServer) -> None:
    fake_bank.behaviours[VALIDATE] = _refuse
    headers = {"Authorization": header} if header is not None else {}
    reply = await client.get("/v1/accounts/acc-1/balance", headers=headers)
    assert reply.status_code == 401, reply.text
    assert reply.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert not any(m == BALANCE for m, _, _ in fake_bank.received)


async def _refuse(request: Message, context: grpc.aio.ServicerContext) -> Message:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "session token is invalid or expired")
    raise AssertionError("unreachable")


async def test_wrong_secret_for_a_real_session_gets_401(
    client: httpx.AsyncClient, session: NewSession
) -> None:
    forged = session.token.rsplit(".", 1)[0] + ".forged-secret"
    reply = await client.get("/v1/accounts/acc-1/balance",
                             headers={"Authorization": f"Bearer {forged}"})
    assert reply.status_code == 401


async def test_revocation_is_seen_by_the_next_request(
    client: httpx.AsyncClient, session: NewSession, engine: AsyncEngine, redis: RedisCluster
) -> None:
    assert (await client.get("/v1/accounts/a/balance", headers=bearer(session))).status_code == 200
    await SessionStore(engine, redis, 900).revoke(session.user_id, [session.session_id])
    assert (await client.get("/v1/accounts/a/balance", headers=bearer(session))).status_code == 401


async def test_redis_miss_falls_back_to_validate_session(
    client: httpx.AsyncClient, fake_bank: FakeBankServer, session: NewSession,
    engine: AsyncEngine, redis: RedisCluster
) -> None:
    store = SessionStore(engine, redis, 900)

    async def validate(request: Message, context: grpc.aio.ServicerContext) -> Message:
        assert isinstance(request, auth_pb2.ValidateSessionRequest)
        caller = await store.authenticate(request.token)
        return auth_pb2.ValidateSessionResponse(user_id=caller.user_id,
                                                session_id=caller.session_id)

    fake_bank.behaviours[VALIDATE] = validate
    await redis.delete(session_key(session.user_id, session.session_id))
    reply = await client.get("/v1/accounts/a/balance", headers=bearer(session))
    assert reply.status_code == 200, reply.text
    assert [m for m, _, _ in fake_bank.received] == [VALIDATE, BALANCE]
    assert fake_bank.received[0][2]["authorization"] == f"Bearer {session.token}"
    assert await redis.exists(session_key(session.user_id, session.session_id))  # refilled


async def test_bad_client_input_gets_a_clear_4xx(
    client: httpx.AsyncClient, session: NewSession, fake_bank: FakeBankServer
) -> None:
    json_headers = {**bearer(session), "Content-Type": "application/json"}
    cases: list[tuple[int, httpx.Response]] = [
        (400, await client.post("/v1/transfers", content=b"{not json", headers=json_headers)),
        (400, await client.post("/v1/transfers", content=b'{"bogus": 1}', headers=json_headers)),
        (400, await client.post("/v1/transfers", content=b"[1, 2]", headers=json_headers)),
        (400, await client.post("/v1/transfers", content=b'{"amount": "ten"}',
                                headers=json_headers)),
        (400, await client.post("/v1/transfers", content=b"\xff\xfe{", headers=json_headers)),
        (400, await client.post("/v1/transfers", content=b"[" * 1000 + b"]" * 1000,
                                headers=json_headers)),
        (400, await client.post("/v1/transfers?fromAccountId=x", content=b"{}",
                                headers=json_headers)),
        (415, await client.post("/v1/transfers", content=b"{}",
                                headers={**bearer(session), "Content-Type": "text/plain"})),
        (415, await client.post("/v1/transfers", content=b"{}", headers=bearer(session))),
        (413, await client.post("/v1/transfers", content=b'{"description": "' + b"x" * 4096
                                + b'"}', headers=json_headers)),
        (400, await client.get("/v1/transfers?pageSize=many", headers=bearer(session))),
        (400, await client.get("/v1/transfers?nope=1", headers=bearer(session))),
        (400, await client.get("/v1/transfers?pageSize=1&page_size=2", headers=bearer(session))),
        (400, await client.post("/v1/transfers", content=b"{}",
                                headers={**json_headers, "Idempotency-Key": "bad key"})),
        (404, await client.get("/v1/nowhere", headers=bearer(session))),
        (404, await client.get("/", headers=bearer(session))),
        (405, await client.delete("/v1/transfers", headers=bearer(session))),
    ]
    for expected, reply in cases:
        assert reply.status_code == expected, (reply.request.url, reply.text)
        body = reply.json()
        assert set(body) == {"code", "message", "details"} and body["message"]
    assert not any(m == CREATE_TRANSFER for m, _, _ in fake_bank.received)


async def test_query_parameters_and_idempotency_key_reach_the_request(
    client: httpx.AsyncClient, session: NewSession, fake_bank: FakeBankServer
) -> None:
    reply = await client.get("/v1/accounts/a%2Fb/transactions?pageSize=5&page_token=t1",
                             headers=bearer(session))
    assert reply.status_code == 200, reply.text
    _, request, _ = fake_bank.received[-1]
    assert (request.account_id, request.page_size, request.page_token) == ("a/b", 5, "t1")

    reply = await client.post(
        "/v1/transfers", json={"fromAccountId": "a", "toAccountId": "b",
                               "amount": {"minorUnits": "250", "currency": "EUR"}},
        headers={**bearer(session), "Idempotency-Key": "key-123"})
    assert reply.status_code == 200, reply.text
    _, request, _ = fake_bank.received[-1]
    assert request.idempotency_key == "key-123" and request.amount.minor_units == 250


async def test_read_your_writes_passes_the_transfer_version(
    client: httpx.AsyncClient, session: NewSession, fake_bank: FakeBankServer,
    engine: AsyncEngine, redis: RedisCluster
) -> None:
    fake_bank.behaviours[CREATE_TRANSFER] = replying(transfer_pb2.Transfer(
        transfer_id="t-1", source_balance=account_pb2.Balance(account_id="src", version=42)))
    reply = await client.post("/v1/transfers", json={"fromAccountId": "src"},
                              headers={**bearer(session), "Idempotency-Key": "k1"})
    assert reply.status_code == 200
    assert reply.json()["sourceBalance"]["version"] == "42"
    await client.get("/v1/accounts/src/balance", headers=bearer(session))
    await client.get("/v1/accounts/src/transactions:recent", headers=bearer(session))
    await client.get("/v1/accounts/other/balance", headers=bearer(session))
    other_session = await SessionStore(engine, redis, 900).create(session.user_id)
    await client.get("/v1/accounts/src/balance", headers=bearer(other_session))
    floors = [(m, r.account_id, r.min_version) for m, r, _ in fake_bank.received[1:]]
    assert floors == [(BALANCE, "src", 42), (RECENT, "src", 42), (BALANCE, "other", 0),
                      (BALANCE, "src", 0)]


async def test_public_routes_need_no_token_and_forward_none(
    client: httpx.AsyncClient, fake_bank: FakeBankServer
) -> None:
    fake_bank.behaviours[LOGIN] = replying(auth_pb2.LoginResponse(token="t", user_id="u"))
    reply = await client.post("/v1/auth/login", json={"email": "a@example.com", "password": "p"},
                              headers={"Authorization": "Bearer whatever"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["ratelimit-policy"].startswith('"address"')
    _, request, metadata = fake_bank.received[-1]
    assert request.email == "a@example.com" and "authorization" not in metadata


async def test_idempotent_reads_are_retried_and_writes_are_not(
    client: httpx.AsyncClient, session: NewSession, fake_bank: FakeBankServer
) -> None:
    attempts: dict[str, int] = {}

    def flaky(reply: Message) -> Callable[[Message, grpc.aio.ServicerContext], object]:
        async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
            name = type(request).__name__
            attempts[name] = attempts.get(name, 0) + 1
            if attempts[name] == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
            return reply

        return behaviour

    fake_bank.behaviours[BALANCE] = flaky(account_pb2.Balance(account_id="a"))
    fake_bank.behaviours[CREATE_TRANSFER] = flaky(transfer_pb2.Transfer(transfer_id="t"))
    assert (await client.get("/v1/accounts/a/balance", headers=bearer(session))).status_code == 200
    reply = await client.post("/v1/transfers", json={}, headers=bearer(session))
    assert reply.status_code == 503
    assert "unavailable" in reply.json()["message"]
    assert attempts == {"GetBalanceRequest": 2, "CreateTransferRequest": 1}


async def test_deadline_is_set_on_every_call(
    base_settings: Settings, fake_bank: FakeBankServer, session: NewSession
) -> None:
    async def slow(request: Message, context: grpc.aio.ServicerContext) -> Message:
        assert context.time_remaining() is not None
        await asyncio.sleep(2)
        return account_pb2.Balance()

    fake_bank.behaviours[BALANCE] = slow
    settings = dataclasses.replace(base_settings, grpc_deadline_s=0.3)
    async with serve_gateway(settings, targets=fake_bank.targets()) as running, \
            httpx.AsyncClient(base_url=running.url) as http:
        reply = await http.get("/v1/accounts/a/balance", headers=bearer(session))
    fake_bank.behaviours.clear()
    assert reply.status_code == 504
    assert reply.json()["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_unreachable_upstream_is_503_and_not_ready(
    base_settings: Settings, session: NewSession
) -> None:
    targets = {name: "ipv4:127.0.0.1:1" for name in
               ("bank.v1.AccountService", "bank.v1.TransferService", "bank.v1.AuthService")}
    settings = dataclasses.replace(base_settings, grpc_deadline_s=1.0)
    async with serve_gateway(settings, targets=targets) as running, \
            httpx.AsyncClient(base_url=running.url) as http:
        reply = await http.get("/v1/accounts/a/balance", headers=bearer(session))
        assert reply.status_code == 503, reply.text
        assert "127.0.0.1" not in reply.text  # upstream addresses are not the client's business
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert (await http.get("/healthz")).status_code == 200
