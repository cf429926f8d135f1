"""The gateway over HTTPS: a real Envoy from the generated bundle, transcoding REST/JSON to gRPC
calls on two FakeBankServer replicas. What reaches the services, what clients get back, and
what never gets past the edge."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from bank.v1 import account_pb2, auth_pb2, common_pb2, transfer_pb2
from google.protobuf.message import Message

from tests.support.gateway import RunningGateway, gateway_settings, running_gateway

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"
LIST_TRANSACTIONS = "/bank.v1.AccountService/ListTransactions"
CREATE_TRANSFER = "/bank.v1.TransferService/CreateTransfer"
LOGIN = "/bank.v1.AuthService/Login"
VALIDATE = "/bank.v1.AuthService/ValidateSession"
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
JSON = {"Content-Type": "application/json"}


def replying(reply: Message) -> Callable[[Message, grpc.aio.ServicerContext], object]:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        return reply

    return behaviour


def assert_status_body(reply: httpx.Response, http_status: int, grpc_code: int) -> None:
    assert reply.status_code == http_status, (reply.request.url, reply.text)
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == grpc_code and body["details"] == [], body


async def test_a_read_is_transcoded_with_proto3_json(fake_bank: RunningGateway) -> None:
    fake_bank.behaviours[BALANCE] = replying(account_pb2.Balance(
        account_id="acc-1", version=7, source=account_pb2.READ_SOURCE_CACHE,
        balance=common_pb2.Money(minor_units=12_345, currency="EUR", formatted="123.45")))
    async with fake_bank.client() as http:
        reply = await http.get("/v1/accounts/acc-1/balance", params={"minVersion": "3"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "accountId": "acc-1", "version": "7", "source": "READ_SOURCE_CACHE",
        "balance": {"minorUnits": "12345", "currency": "EUR", "formatted": "123.45"},
    }
    (call,) = fake_bank.calls(BALANCE)
    assert call.request == account_pb2.GetBalanceRequest(account_id="acc-1", min_version=3)
    # gRPC is not the client's business: no grpc-* headers on the HTTP reply.
    assert not [name for name in reply.headers if name.startswith("grpc-")]


async def test_defaults_are_printed_and_int64_is_a_string(fake_bank: RunningGateway) -> None:
    fake_bank.behaviours[CREATE_TRANSFER] = replying(transfer_pb2.Transfer(
        transfer_id="t", status=transfer_pb2.TRANSFER_STATUS_COMPLETED,
        source_balance=account_pb2.Balance(version=2**40)))
    async with fake_bank.client() as http:
        reply = await http.post("/v1/transfers", json={})
    body = reply.json()
    assert body["status"] == "TRANSFER_STATUS_COMPLETED"
    assert body["sourceBalance"]["version"] == "1099511627776"
    assert body["description"] == ""  # fields are always present, defaults included


async def test_headers_reach_the_service_as_metadata(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        reply = await http.post(
            "/v1/transfers",
            json={"fromAccountId": "a", "toAccountId": "b",
                  "amount": {"minorUnits": "9007199254740993", "currency": "EUR"}},
            headers={"Authorization": "Bearer u.s.secret", "Idempotency-Key": "key-123",
                     "User-Agent": "tests/1.0", "X-Request-Id": "req-abc",
                     "X-Bank-Edge": "0", "X-Forwarded-For": "6.6.6.6"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "req-abc"  # a sane client id is kept and echoed
    (call,) = fake_bank.calls(CREATE_TRANSFER)
    assert call.request.amount.minor_units == 9_007_199_254_740_993  # beyond a double
    metadata = call.metadata
    assert metadata["authorization"] == "Bearer u.s.secret"
    assert metadata["idempotency-key"] == "key-123"
    assert metadata["user-agent"].startswith("tests/1.0")
    assert metadata["x-request-id"] == "req-abc"
    # Envoy overwrites the edge marker whatever the client sent...
    assert metadata["x-bank-edge"] == "1"
    # ...and appends the TCP peer to X-Forwarded-For: the rightmost entry is the client
    # (Envoy writes this machine's own address for a loopback peer), never what it claimed.
    entries = [entry.strip() for entry in metadata["x-forwarded-for"].split(",")]
    assert entries[0] == "6.6.6.6" and entries[-1] != "6.6.6.6"
    ipaddress.ip_address(entries[-1])
    # The REST route the call came from (the transcoder's own headers), for the services' logs.
    assert metadata["x-envoy-original-path"] == "/v1/transfers"


async def test_request_ids_are_made_when_absent_and_echoed(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        ok = await http.get("/v1/accounts/a/balance")
        refused = await http.get("/v1/nowhere")
    (call,) = fake_bank.calls(BALANCE)
    assert ok.headers["x-request-id"] == call.metadata["x-request-id"] != ""
    assert refused.headers["x-request-id"]


async def test_the_service_gets_a_deadline(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        await http.get("/v1/accounts/a/balance")
    (call,) = fake_bank.calls(BALANCE)
    assert call.deadline_s is not None and 0 < call.deadline_s <= 5.0  # grpc_deadline_s


async def test_path_variables_and_query_parameters(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        reply = await http.get("/v1/accounts/a%2Fb/transactions?pageSize=5&page_token=t1")
    assert reply.status_code == 200, reply.text
    (call,) = fake_bank.calls(LIST_TRANSACTIONS)
    assert (call.request.account_id, call.request.page_size, call.request.page_token) == (
        "a/b", 5, "t1")


async def test_public_routes_pass_without_a_token(fake_bank: RunningGateway) -> None:
    fake_bank.behaviours[LOGIN] = replying(auth_pb2.LoginResponse(token="t", user_id="u"))
    async with fake_bank.client() as http:
        reply = await http.post("/v1/auth/login", json={"email": "a@example.com",
                                                         "password": "p"})
    assert reply.status_code == 200 and reply.json()["token"] == "t"
    (call,) = fake_bank.calls(LOGIN)
    assert call.request.email == "a@example.com"


async def test_unknown_body_fields_are_dropped(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        reply = await http.post("/v1/auth/login", json={"email": "a@example.com", "bogus": 1})
    assert reply.status_code == 200, reply.text
    (call,) = fake_bank.calls(LOGIN)
    assert call.request == auth_pb2.LoginRequest(email="a@example.com")


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "HTTP/2"])
async def test_bad_input_is_a_4xx_status_body_and_reaches_no_service(
    fake_bank: RunningGateway, http2: bool
) -> None:
    big = b'{"description": "' + b"x" * (64 * 1024) + b'"}'
    async with fake_bank.client(http2=http2) as http:
        cases: list[tuple[int, int, httpx.Response]] = [
            (400, 3, await http.post("/v1/transfers", content=b"{not json", headers=JSON)),
            (400, 3, await http.post("/v1/transfers", content=b"[1, 2]", headers=JSON)),
            (400, 3, await http.post("/v1/transfers", content=b'{"amount": "ten"}',
                                     headers=JSON)),
            (400, 3, await http.post("/v1/transfers", content=b'{"fromAccountId": 5}',
                                     headers=JSON)),
            (400, 3, await http.post("/v1/transfers", content=b"\xff\xfe{", headers=JSON)),
            (400, 3, await http.post("/v1/transfers", content=b"[" * 1000 + b"]" * 1000,
                                     headers=JSON)),
            (400, 3, await http.post("/v1/transfers?fromAccountId=x", content=b"{}",
                                     headers=JSON)),
            (400, 3, await http.get("/v1/transfers?pageSize=many")),
            (400, 3, await http.get("/v1/transfers?nope=1")),
            (415, 3, await http.post("/v1/transfers", content=b"{}",
                                     headers={"Content-Type": "text/plain"})),
            (415, 3, await http.post("/v1/transfers", content=b"{}")),
            (413, 3, await http.post("/v1/transfers", content=big, headers=JSON)),
            (404, 5, await http.get("/v1/nowhere")),
            (404, 5, await http.get("/")),
            (404, 5, await http.get("/metrics")),
            (404, 5, await http.get("/v1/accounts/a/balance/extra")),
            (405, 12, await http.delete("/v1/transfers")),
            (405, 12, await http.post("/v1/accounts/a/balance", json={})),
        ]
    for http_status, code, reply in cases:
        assert_status_body(reply, http_status, code)
        assert reply.json()["message"], reply.request.url
    assert fake_bank.received == []


async def test_a_streamed_body_over_the_limit_is_413_on_http2(fake_bank: RunningGateway) -> None:
    async def chunks() -> object:
        for _ in range(80):
            yield b" " * 1024

    async with fake_bank.client(http2=True) as http:
        reply = await http.post("/v1/transfers", content=chunks(), headers=JSON)  # type: ignore[arg-type]
    assert reply.http_version == "HTTP/2"
    assert_status_body(reply, 413, 3)
    assert fake_bank.received == []


async def test_405_names_the_allowed_methods(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        reply = await http.put("/v1/transfers", json={})
    assert reply.status_code == 405 and reply.headers["allow"] == "GET, POST"


async def test_paths_are_normalised_before_routing(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        merged = await http.get("/v1//accounts///a/balance")
        dotted = await http.get("/v1/transfers/../accounts/a/balance")
    assert merged.status_code == 200 and dotted.status_code == 200
    assert [c.request.account_id for c in fake_bank.calls(BALANCE)] == ["a", "a"]


async def test_every_reply_carries_the_security_headers(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        replies = [
            await http.get("/v1/accounts/a/balance"),
            await http.get("/v1/nowhere"),
            await http.delete("/v1/transfers"),
            await http.post("/v1/transfers", content=b"{", headers=JSON),
            await http.get("/openapi.json"),
            await http.get("/docs"),
        ]
    for reply in replies:
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers.get_list(name) == [value], (reply.request.url, name)
        assert reply.headers["x-request-id"]
        assert "server" not in reply.headers


async def test_openapi_and_docs_are_served_by_envoy(fake_bank: RunningGateway) -> None:
    async with fake_bank.client() as http:
        document = await http.get("/openapi.json")
        docs = await http.get("/docs")
    assert document.headers["content-type"] == "application/json"
    paths = document.json()["paths"]
    assert "/v1/accounts/{account_id}/balance" in paths
    assert "/v1/accounts/{account_id}/transactions:recent" in paths
    assert "ValidateSession" not in document.text
    assert docs.headers["content-type"].startswith("text/html")
    assert "/v1/transfers" in docs.text
    assert fake_bank.received == []


async def test_native_grpc_to_an_internal_method_is_refused_at_the_edge(
    fake_bank: RunningGateway
) -> None:
    fake_bank.behaviours[VALIDATE] = replying(auth_pb2.ValidateSessionResponse(user_id="u"))
    request = auth_pb2.ValidateSessionRequest(token="u.s.secret").SerializeToString()
    frame = b"\x00" + len(request).to_bytes(4, "big") + request
    async with fake_bank.client(http2=True) as http:
        reply = await http.post("/bank.v1.AuthService/ValidateSession", content=frame,
                                headers={"Content-Type": "application/grpc", "TE": "trailers"})
    assert reply.headers.get("grpc-status") not in (None, "0"), reply.headers
    assert fake_bank.received == []


async def test_upstream_5xx_messages_pass_unchanged(fake_bank: RunningGateway) -> None:
    async def internal(request: Message, context: grpc.aio.ServicerContext) -> Message:
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (request id r-1)")
        raise AssertionError("unreachable")

    fake_bank.behaviours[BALANCE] = internal
    async with fake_bank.client() as http:
        reply = await http.get("/v1/accounts/a/balance")
    assert reply.status_code == 500
    assert reply.json() == {"code": 13, "message": "internal error (request id r-1)",
                            "details": []}


async def test_headers_grpc_cannot_carry_are_dropped_not_a_5xx(fake_bank: RunningGateway) -> None:
    # A header name outside gRPC's [0-9a-z_.-] made the gRPC server fail the call (INTERNAL);
    # names gRPC reserves are not the client's to send. Values (a tab, UTF-8) pass: gRPC takes
    # them.
    async with fake_bank.client() as http:
        reply = await http.get("/v1/accounts/a/balance", headers=[
            ("2w$oek&", "x"), ("x-tab", "a\tb"), ("x-data-bin", "not base64"),
            ("grpc-encoding", "gzip"), ("x-kept", "yes")])
    assert reply.status_code == 200, reply.text
    (call,) = fake_bank.calls(BALANCE)
    assert call.metadata["x-kept"] == "yes" and call.metadata["x-tab"] == "a\tb"
    assert not {"2w$oek&", "x-data-bin"} & set(call.metadata)
    assert call.metadata.get("grpc-encoding") != "gzip"


async def test_one_address_is_limited_at_the_edge_before_any_service_work(
    tmp_path: Path,
) -> None:
    """Past its per-address budget a client gets 429 from Envoy itself: the request never
    reaches a service (no Redis, no PostgreSQL work for a flood)."""
    settings = gateway_settings(edge_address_limit_per_minute=5)
    async with running_gateway(tmp_path, settings=settings) as gateway:
        async with gateway.client() as http:
            replies = [await http.get("/v1/accounts/a/balance") for _ in range(8)]
    assert [r.status_code for r in replies[:5]] == [200] * 5
    limited = replies[5:]
    assert {r.status_code for r in limited} == {429}
    assert limited[0].json()["code"] == 8 and limited[0].headers["retry-after"]
    assert len(gateway.calls(BALANCE)) == 5
