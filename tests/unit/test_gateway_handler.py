"""The API handler with the fakes that ship beside the real adapters (FakeGate,
ScriptedUpstreams), driven in-process through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from bank.v1 import account_pb2, transfer_pb2
from google.protobuf.message import Message

from services.gateway.descriptors import load_catalog
from services.gateway.fakes import FakeGate, ScriptedUpstreams
from services.gateway.http_app import ApiHandler
from services.gateway.routes import build_route_table
from shared.auth_context import Caller

CATALOG = load_catalog()
TOKEN = "token-1"


@pytest.fixture
def gate() -> FakeGate:
    fake = FakeGate(limit_per_minute=5)
    fake.sessions[TOKEN] = Caller("user-1", "session-1")
    return fake


@pytest.fixture
def upstreams() -> ScriptedUpstreams:
    return ScriptedUpstreams(CATALOG)


@pytest.fixture
async def client(gate: FakeGate, upstreams: ScriptedUpstreams
                 ) -> AsyncIterator[httpx.AsyncClient]:
    handler = ApiHandler(build_route_table(CATALOG.rpcs), gate, upstreams,
                         max_body_bytes=1024, trusted_hops=1)
    transport = httpx.ASGITransport(app=handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


async def test_a_transfer_raises_the_floor_of_that_sessions_reads(
    client: httpx.AsyncClient, upstreams: ScriptedUpstreams
) -> None:
    async def transfer(request: Message) -> Message:
        return transfer_pb2.Transfer(source_balance=account_pb2.Balance(account_id="a",
                                                                        version=9))

    upstreams.scripts["/bank.v1.TransferService/CreateTransfer"] = transfer
    assert (await client.post("/v1/transfers", json={})).status_code == 200
    await client.get("/v1/accounts/a/balance")
    await client.get("/v1/accounts/a/balance?minVersion=12")
    await client.get("/v1/accounts/b/balance")
    floors = [request.min_version for _, request, _ in upstreams.calls[1:]]
    assert floors == [9, 12, 0]  # the client's own higher floor is kept


async def test_idempotency_key_header_and_body_must_agree(client: httpx.AsyncClient) -> None:
    same = await client.post("/v1/transfers", json={"idempotencyKey": "k"},
                             headers={"Idempotency-Key": "k"})
    differ = await client.post("/v1/transfers", json={"idempotencyKey": "k"},
                               headers={"Idempotency-Key": "other"})
    assert (same.status_code, differ.status_code) == (200, 400)


async def test_over_the_limit_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    statuses = [(await client.get("/v1/accounts/a/balance")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = await client.get("/v1/accounts/a/balance")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["details"][0]["@type"].endswith("google.rpc.RetryInfo")


async def test_a_gateway_bug_is_a_500_that_names_only_the_request_id(
    client: httpx.AsyncClient, upstreams: ScriptedUpstreams
) -> None:
    async def broken(request: Message) -> Message:
        raise RuntimeError("secret internals")

    upstreams.scripts["/bank.v1.AccountService/GetBalance"] = broken
    reply = await client.get("/v1/accounts/a/balance", headers={"X-Request-Id": "rid-7"})
    assert reply.status_code == 500
    assert reply.json()["message"] == "internal error (request id rid-7)"
