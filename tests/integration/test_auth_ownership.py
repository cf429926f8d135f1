"""Ownership in depth (IDOR): user B, holding a perfectly valid session, aims every account and
transfer RPC at user A's account and money, straight at the services (no gateway in between).
Each is refused, and no error message carries A's data."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from bank.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    transfer_pb2,
    transfer_pb2_grpc,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from services.transfer.bootstrap import build_transfer_app
from shared.config import Settings
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.redis_users import for_service
from tests.support.rpc import bearer

pytestmark = pytest.mark.integration

REFUSED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
A_BALANCE = 987_654


@dataclasses.dataclass
class Party:
    email: str
    user_id: str
    account_id: str
    token: str


@dataclasses.dataclass
class World:
    accounts: account_pb2_grpc.AccountServiceStub
    transfers: transfer_pb2_grpc.TransferServiceStub
    alice: Party
    bob: Party
    alice_transfer_id: str

    def secrets_of_alice(self) -> list[str]:
        """What Bob must not learn (the ids he sent himself may be echoed back)."""
        return [self.alice.email, self.alice.user_id, str(A_BALANCE), "9876.54", "to savings"]


@pytest_asyncio.fixture(scope="module")
async def world(base_settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    auth_app = build_auth_app(auth_settings(base_settings), port=0)
    account_app = build_account_app(
        for_service(base_settings, "account"), port=0)
    transfer_app = build_transfer_app(
        for_service(base_settings, "transfer"), port=0)
    apps = [auth_app, account_app, transfer_app]
    started = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        async with (grpc.aio.insecure_channel(f"127.0.0.1:{auth_app.grpc.port}") as auth_ch,
                    grpc.aio.insecure_channel(f"127.0.0.1:{account_app.grpc.port}") as acc_ch,
                    grpc.aio.insecure_channel(f"127.0.0.1:{transfer_app.grpc.port}") as tr_ch):
            auth = auth_pb2_grpc.AuthServiceStub(auth_ch)
            parties = []
            for who in ("alice", "bob"):
                email = f"{who}-{uuid.uuid4().hex[:10]}@example.com"
                made = await auth.Register(
                    auth_pb2.RegisterRequest(email=email, password=PASSWORD, name=who))
                session = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD),
                                           metadata=(("x-forwarded-for", random_address()),))
                parties.append(Party(email, made.user_id, made.account_id, session.token))
            alice, bob = parties
            await seed.ensure_settlement_account(engine)
            await seed.deposit(engine, alice.account_id, A_BALANCE + 1_000)
            savings = await seed.create_account(engine, alice.user_id, name="Savings")
            transfers = transfer_pb2_grpc.TransferServiceStub(tr_ch)
            own = await transfers.CreateTransfer(
                transfer_pb2.CreateTransferRequest(
                    from_account_id=alice.account_id, to_account_id=savings,
                    amount=common_pb2.Money(minor_units=1_000, currency="EUR"),
                    idempotency_key=uuid.uuid4().hex, description="to savings"),
                metadata=bearer(alice.token))
            yield World(account_pb2_grpc.AccountServiceStub(acc_ch), transfers, alice, bob,
                        own.transfer_id)
    finally:
        for app in started:
            await app.stop()


def assert_refused_without_leak(world: World, err: grpc.aio.AioRpcError) -> None:
    assert err.code() in REFUSED, err
    details = err.details() or ""
    for secret in world.secrets_of_alice():
        assert secret not in details, f"{secret!r} leaked in {details!r}"


async def test_bob_cannot_read_alice_s_balance(world: World) -> None:
    request = account_pb2.GetBalanceRequest(account_id=world.alice.account_id)
    mine = await world.accounts.GetBalance(request, metadata=bearer(world.alice.token))
    assert mine.balance.minor_units == A_BALANCE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.accounts.GetBalance(request, metadata=bearer(world.bob.token))
    assert_refused_without_leak(world, refused.value)
    # Someone else's account and a missing one are indistinguishable.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await world.accounts.GetBalance(account_pb2.GetBalanceRequest(
            account_id=str(uuid.uuid4())), metadata=bearer(world.bob.token))
    assert missing.value.code() == refused.value.code()


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("GetAccount", account_pb2.GetAccountRequest),
        ("ListRecentTransactions", account_pb2.ListRecentTransactionsRequest),
        ("ListTransactions", account_pb2.ListTransactionsRequest),
    ],
)
async def test_bob_cannot_read_alice_s_account_by_any_rpc(
    world: World, method: str, request_type: Callable[..., object]
) -> None:
    call = getattr(world.accounts, method)
    try:
        await call(request_type(account_id=world.alice.account_id),
                   metadata=bearer(world.alice.token))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip(f"AccountService.{method} is not implemented yet")
        raise
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(request_type(account_id=world.alice.account_id),
                   metadata=bearer(world.bob.token))
    assert_refused_without_leak(world, refused.value)


async def test_bob_lists_only_his_own_accounts(world: World) -> None:
    try:
        listed = await world.accounts.ListAccounts(account_pb2.ListAccountsRequest(),
                                                   metadata=bearer(world.bob.token))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("AccountService.ListAccounts is not implemented yet")
        raise
    assert [a.account_id for a in listed.accounts] == [world.bob.account_id]


async def test_bob_cannot_debit_alice_s_account(world: World, engine: AsyncEngine) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.transfers.CreateTransfer(
            transfer_pb2.CreateTransferRequest(
                from_account_id=world.alice.account_id, to_account_id=world.bob.account_id,
                amount=common_pb2.Money(minor_units=500, currency="EUR"),
                idempotency_key=uuid.uuid4().hex),
            metadata=bearer(world.bob.token))
    assert_refused_without_leak(world, refused.value)
    balance = await world.accounts.GetBalance(
        account_pb2.GetBalanceRequest(account_id=world.alice.account_id),
        metadata=bearer(world.alice.token))
    assert balance.balance.minor_units == A_BALANCE  # nothing moved


async def test_bob_cannot_see_alice_s_transfers(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.transfers.GetTransfer(
            transfer_pb2.GetTransferRequest(transfer_id=world.alice_transfer_id),
            metadata=bearer(world.bob.token))
    assert_refused_without_leak(world, refused.value)
    listed = await world.transfers.ListTransfers(transfer_pb2.ListTransfersRequest(),
                                                 metadata=bearer(world.bob.token))
    assert world.alice_transfer_id not in {t.transfer_id for t in listed.transfers}


async def test_no_rpc_answers_without_a_session(world: World) -> None:
    calls = [
        world.accounts.GetBalance(account_pb2.GetBalanceRequest(
            account_id=world.alice.account_id)),
        world.transfers.CreateTransfer(transfer_pb2.CreateTransferRequest(
            from_account_id=world.alice.account_id, to_account_id=world.bob.account_id,
            amount=common_pb2.Money(minor_units=1, currency="EUR"),
            idempotency_key=uuid.uuid4().hex)),
        world.transfers.GetTransfer(transfer_pb2.GetTransferRequest(
            transfer_id=world.alice_transfer_id)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
