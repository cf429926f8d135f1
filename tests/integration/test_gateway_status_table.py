"""The gRPC status -> HTTP status table, one test per code: a FakeBankServer replica aborts with
the code, Envoy's transcoder answers with the standard HTTP status and a google.rpc.Status body.
And the rate-limit contract: what a service sends with RESOURCE_EXHAUSTED becomes a 429 with
Retry-After and RateLimit headers and a RetryInfo detail."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"
CREATE_TRANSFER = "/bank.v1.TransferService/CreateTransfer"

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
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.DATA_LOSS, 500),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
]


def aborting(code: grpc.StatusCode, message: str,
             trailing: tuple[tuple[str, str | bytes], ...] = ()
             ) -> Callable[[Message, grpc.aio.ServicerContext], object]:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(code, message)
        raise AssertionError("unreachable")

    return behaviour


@pytest.mark.parametrize(("code", "http_status"), TABLE, ids=[c.name for c, _ in TABLE])
async def test_status_maps_to_http(code: grpc.StatusCode, http_status: int,
                                   fake_bank: RunningGateway) -> None:
    fake_bank.behaviours[BALANCE] = aborting(code, "account acc-9 is closed (detail)")
    async with fake_bank.client() as http:
        reply = await http.get("/v1/accounts/acc-9/balance")
    assert reply.status_code == http_status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"code": code.value[0], "message": "account acc-9 is closed (detail)",
                            "details": []}


def rate_limited(retry_after_s: int) -> Callable[[Message, grpc.aio.ServicerContext], object]:
    """What the services' interceptor sends when the per-user limit is reached: trailing
    metadata on the abort, before any message (a trailers-only response)."""
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                               message="rate limit of 100 requests per 60 s exceeded")
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=retry_after_s)))
    return aborting(grpc.StatusCode.RESOURCE_EXHAUSTED, status.message, (
        ("retry-after", str(retry_after_s)),
        ("ratelimit", f'"user";r=0;t={retry_after_s}'),
        ("ratelimit-policy", '"user";q=100;w=60'),
        ("grpc-status-details-bin", status.SerializeToString()),
    ))


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "HTTP/2"])
async def test_rate_limited_is_429_with_headers_and_retry_info(fake_bank: RunningGateway,
                                                               http2: bool) -> None:
    fake_bank.behaviours[CREATE_TRANSFER] = rate_limited(42)
    async with fake_bank.client(http2=http2) as http:
        reply = await http.post("/v1/transfers", json={})
    assert reply.status_code == 429, reply.text
    assert reply.headers["retry-after"] == "42"
    assert reply.headers["ratelimit"] == '"user";r=0;t=42'
    assert reply.headers["ratelimit-policy"] == '"user";q=100;w=60'
    assert reply.json() == {
        "code": 8,
        "message": "rate limit of 100 requests per 60 s exceeded",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}],
    }
    assert "grpc-status-details-bin" not in reply.headers
    assert len(fake_bank.calls(CREATE_TRANSFER)) == 1  # a refused write is never retried


async def test_unavailable_reads_are_retried_on_another_replica_and_writes_are_not(
    fake_bank: RunningGateway
) -> None:
    failed: set[str] = set()

    async def flaky(request: Message, context: grpc.aio.ServicerContext) -> Message:
        kind = type(request).__name__
        if kind not in failed:
            failed.add(kind)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        return type(request)()  # any message: the fake's reply type does not matter here

    from bank.v1 import account_pb2, transfer_pb2

    async def balance(request: Message, context: grpc.aio.ServicerContext) -> Message:
        await flaky(request, context)
        return account_pb2.Balance(account_id="a")

    async def transfer(request: Message, context: grpc.aio.ServicerContext) -> Message:
        await flaky(request, context)
        return transfer_pb2.Transfer(transfer_id="t")

    fake_bank.behaviours[BALANCE] = balance
    fake_bank.behaviours[CREATE_TRANSFER] = transfer
    async with fake_bank.client() as http:
        read = await http.get("/v1/accounts/a/balance")
        write = await http.post("/v1/transfers", json={})
    assert read.status_code == 200 and read.json()["accountId"] == "a"
    first, second = fake_bank.calls(BALANCE)
    assert first.replica != second.replica  # the retry went to the other replica
    assert write.status_code == 503 and write.json()["code"] == 14
    assert len(fake_bank.calls(CREATE_TRANSFER)) == 1
