"""The client package's channel against real gRPC servers (FakeBankServer, scripted answers):
retries only for the NO_SIDE_EFFECTS methods, never for CreateTransfer; a deadline and the
credentials on every call; requests balanced over every replica of the target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from bank.v1 import account_pb2
from cachebank_client import (
    AsyncBankClient,
    BankClient,
    BearerToken,
    ChannelSettings,
    Endpoints,
    Money,
    RetryPolicy,
)
from cachebank_client.channel import service_config
from cachebank_client.errors import Unavailable
from google.protobuf.message import Message

from services.gateway.descriptors import load_catalog
from tests.support.fake_bank import FakeBankServer, Received

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"
TRANSFER = "/bank.v1.TransferService/CreateTransfer"
TOKEN = BearerToken("user.session.secret")
# Short backoffs: the retries themselves are what is checked, not their timing.
FAST = ChannelSettings(timeout_s=5.0, retry=RetryPolicy(initial_backoff_s=0.01,
                                                        max_backoff_s=0.02))


def test_the_service_config_retries_exactly_the_side_effect_free_methods() -> None:
    config = service_config(ChannelSettings())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (retried,) = config["methodConfig"]
    names = {f"/{n['service']}/{n['method']}" for n in retried["name"]}
    # The gateway's own reading of the same proto option agrees.
    expected = {rpc.full_method for rpc in load_catalog().rpcs if rpc.side_effect_free}
    assert names == expected
    assert BALANCE in names and TRANSFER not in names
    assert retried["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


async def _fail_first(times: int, reply: Message) -> tuple[list[int], object]:
    attempts = [0]

    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        attempts[0] += 1
        if attempts[0] <= times:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica restarting")
        return reply

    return attempts, behaviour


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[list[FakeBankServer], list[Received]]]:
    catalog = load_catalog()
    received: list[Received] = []
    behaviours: dict[str, object] = {}
    servers = [FakeBankServer(catalog, f"r{i}", behaviours=behaviours,  # type: ignore[arg-type]
                              received=received) for i in range(2)]
    for server in servers:
        await server.start()
    try:
        yield servers, received
    finally:
        for server in servers:
            await server.stop()


def _endpoints(servers: list[FakeBankServer]) -> Endpoints:
    target = "ipv4:" + ",".join(s.address for s in servers)
    return Endpoints(target, target, target)


async def test_a_read_is_retried_on_unavailable_and_a_transfer_is_not(
        replicas: tuple[list[FakeBankServer], list[Received]]) -> None:
    servers, received = replicas
    attempts, behaviour = await _fail_first(2, account_pb2.Balance(account_id="a", version=7))
    servers[0].behaviours[BALANCE] = behaviour  # type: ignore[assignment]
    always, refuse = await _fail_first(1_000, account_pb2.Balance())
    servers[0].behaviours[TRANSFER] = refuse  # type: ignore[assignment]
    async with AsyncBankClient(_endpoints(servers), credentials=TOKEN, settings=FAST) as bank:
        balance = await bank.balance("a")
        assert balance.version == 7 and attempts[0] == 3
        with pytest.raises(Unavailable):
            await bank.transfer("a", "b", Money(100, "EUR"), idempotency_key="k-1")
    assert always[0] == 1, "CreateTransfer must never be retried by the channel"
    sent = [r for r in received if r.method == TRANSFER]
    assert len(sent) == 1 and sent[0].request.idempotency_key == "k-1"  # type: ignore[attr-defined]


async def test_the_blocking_client_retries_the_same_way(
        replicas: tuple[list[FakeBankServer], list[Received]]) -> None:
    servers, _ = replicas
    attempts, behaviour = await _fail_first(1, account_pb2.Balance(account_id="a", version=3))
    servers[0].behaviours[BALANCE] = behaviour  # type: ignore[assignment]
    always, refuse = await _fail_first(1_000, account_pb2.Balance())
    servers[0].behaviours[TRANSFER] = refuse  # type: ignore[assignment]

    def calls() -> None:
        with BankClient(_endpoints(servers), credentials=TOKEN, settings=FAST) as bank:
            assert bank.balance("a").version == 3
            with pytest.raises(Unavailable):
                bank.transfer("a", "b", Money(1, "EUR"), idempotency_key="k-2")

    await asyncio.to_thread(calls)
    assert attempts[0] == 2 and always[0] == 1


async def test_every_call_has_a_deadline_credentials_and_a_request_id(
        replicas: tuple[list[FakeBankServer], list[Received]]) -> None:
    servers, received = replicas
    async with AsyncBankClient(_endpoints(servers), credentials=TOKEN,
                               settings=ChannelSettings(timeout_s=3.0)) as bank:
        await bank.balance("a")
        await bank.recent_transactions("a")
        await bank.transfers()
        await bank.accounts(credentials=BearerToken("other.user.token"))
        await bank.login("someone@example.com", "secret")
        # Raw stubs get the channel's deadline too.
        await bank.account.ListLoans(account_pb2.ListLoansRequest())
    assert len(received) == 6
    for call in received:
        # The propagated deadline (the clocks round it up a little): 3 s, not none, not 5 s.
        assert call.deadline_s is not None and 0 < call.deadline_s < 4.0, call.method
    authorizations = [r.metadata.get("authorization") for r in received[:5]]
    assert authorizations == ["Bearer user.session.secret"] * 3 + [
        "Bearer other.user.token", None]
    assert all(len(r.metadata.get("x-request-id", "")) == 32 for r in received[:5])


async def test_requests_are_balanced_over_every_replica(
        replicas: tuple[list[FakeBankServer], list[Received]]) -> None:
    servers, received = replicas
    async with AsyncBankClient(_endpoints(servers), credentials=TOKEN) as bank:
        for _ in range(10):
            await bank.balance("a")
    assert {r.replica for r in received} == {"r0", "r1"}


async def test_a_transfer_without_an_idempotency_key_is_refused_before_sending(
        replicas: tuple[list[FakeBankServer], list[Received]]) -> None:
    servers, received = replicas
    async with AsyncBankClient(_endpoints(servers), credentials=TOKEN) as bank:
        with pytest.raises(ValueError, match="idempotency key"):
            await bank.transfer("a", "b", Money(1, "EUR"), idempotency_key=" ")
    assert received == []
