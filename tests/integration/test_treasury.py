"""Money in and out of the bank: TreasuryService on a real transfer service, called with machine
credentials. Only a credential with the method's scope may call it; sessions may not; machine
credentials may call nothing that acts for a user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import psycopg
import pytest
from bank.v1 import common_pb2, treasury_pb2, treasury_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.machine_credentials import create_credential, revoke_credential
from shared.config import Settings
from shared.pg_pool import libpq_url
from tests.support.rpc import rpc_error
from tests.support.transfer import (
    account_state,
    ledger_problems,
    new_customer,
    running_transfer_app,
    transfer_request,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def database(base_settings: Settings) -> AsyncIterator[Any]:
    async with await psycopg.AsyncConnection.connect(libpq_url(base_settings.database_url),
                                                     autocommit=True) as conn:
        yield conn


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def movement(account: str, amount: int, key: str, currency: str = "EUR") -> Any:
    return treasury_pb2.TreasuryMovementRequest(
        account_id=account, amount=common_pb2.Money(minor_units=amount, currency=currency),
        idempotency_key=key, reference="wire 2026-12-03")


async def test_deposits_and_withdrawals_need_the_scope_and_move_money_once(
    base_settings: Settings, engine: AsyncEngine, database: Any, unique: Callable[[str], str],
) -> None:
    customer = await new_customer(engine, unique, deposit=1_000)
    account = customer.accounts[0]
    depositor = await create_credential(database, unique("dep").lower(), ["treasury:deposit"])
    cashier = await create_credential(database, unique("wd").lower(), ["treasury:withdraw"])
    async with running_transfer_app(base_settings) as (app, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            treasury = treasury_pb2_grpc.TreasuryServiceStub(channel)
            key = uuid.uuid4().hex
            first = await treasury.Deposit(movement(account, 500, key), metadata=bearer(depositor))
            again = await treasury.Deposit(movement(account, 500, key), metadata=bearer(depositor))
            assert again.transfer_id == first.transfer_id  # a retry moves nothing twice
            assert first.description == "wire 2026-12-03"
            changed = await rpc_error(treasury.Deposit(movement(account, 501, key),
                                                       metadata=bearer(depositor)))
            assert changed.code() == grpc.StatusCode.ALREADY_EXISTS

            wrong_scope = await rpc_error(treasury.Withdraw(
                movement(account, 100, uuid.uuid4().hex), metadata=bearer(depositor)))
            assert wrong_scope.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "lacks the scope treasury:withdraw" in (wrong_scope.details() or "")
            too_much = await rpc_error(treasury.Withdraw(
                movement(account, 1_501, uuid.uuid4().hex), metadata=bearer(cashier)))
            assert too_much.code() == grpc.StatusCode.FAILED_PRECONDITION
            await treasury.Withdraw(movement(account, 300, uuid.uuid4().hex),
                                    metadata=bearer(cashier))

            missing = await rpc_error(treasury.Deposit(
                movement(str(uuid.uuid4()), 1, uuid.uuid4().hex), metadata=bearer(depositor)))
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            no_settlement = await rpc_error(treasury.Deposit(
                movement(account, 1, uuid.uuid4().hex, currency="XAU"),
                metadata=bearer(depositor)))
            assert no_settlement.code() == grpc.StatusCode.FAILED_PRECONDITION

    state = await account_state(engine, [account])
    ((_, balance, _),) = state["balances"]
    assert balance == 1_000 + 500 - 300
    assert await ledger_problems(engine, [account]) == []


async def test_sessions_and_machines_stay_on_their_side(
    base_settings: Settings, engine: AsyncEngine, database: Any, unique: Callable[[str], str],
) -> None:
    customer = await new_customer(engine, unique, accounts=2, deposit=1_000)
    machine = await create_credential(database, unique("both").lower(),
                                      ["treasury:deposit", "treasury:withdraw"])
    async with running_transfer_app(base_settings) as (app, transfers):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            treasury = treasury_pb2_grpc.TreasuryServiceStub(channel)
            by_customer = await rpc_error(treasury.Deposit(
                movement(customer.accounts[0], 1_000_000, uuid.uuid4().hex),
                metadata=customer.metadata))
            assert by_customer.code() == grpc.StatusCode.PERMISSION_DENIED
            source, target = customer.accounts
            as_user = await rpc_error(transfers.CreateTransfer(
                transfer_request(source, target, 10, uuid.uuid4().hex), metadata=bearer(machine)))
            assert as_user.code() == grpc.StatusCode.PERMISSION_DENIED
            reserved = await rpc_error(transfers.CreateTransfer(
                transfer_request(source, target, 10, "treasury:mine"),
                metadata=customer.metadata))
            assert reserved.code() == grpc.StatusCode.INVALID_ARGUMENT
            forged = await rpc_error(treasury.Deposit(
                movement(source, 1, uuid.uuid4().hex),
                metadata=bearer(machine[:-4] + "AAAA")))
            assert forged.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_revoked_credential_is_refused(
    base_settings: Settings, engine: AsyncEngine, database: Any, unique: Callable[[str], str],
) -> None:
    customer = await new_customer(engine, unique, deposit=1)
    name = unique("gone").lower()
    token = await create_credential(database, name, ["treasury:deposit"])
    assert await revoke_credential(database, name)
    async with running_transfer_app(base_settings) as (app, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            treasury = treasury_pb2_grpc.TreasuryServiceStub(channel)
            refused = await rpc_error(treasury.Deposit(
                movement(customer.accounts[0], 1, uuid.uuid4().hex), metadata=bearer(token)))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_client_package_carries_a_machine_credential(
    base_settings: Settings, engine: AsyncEngine, database: Any, unique: Callable[[str], str],
) -> None:
    from cachebank_client import MachineCredential

    customer = await new_customer(engine, unique, deposit=1)
    credential = MachineCredential(
        await create_credential(database, unique("client").lower(), ["treasury:deposit"]))
    async with running_transfer_app(base_settings) as (app, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            done = await treasury_pb2_grpc.TreasuryServiceStub(channel).Deposit(
                movement(customer.accounts[0], 7, uuid.uuid4().hex),
                metadata=credential.metadata())
    assert done.amount.minor_units == 7
    with pytest.raises(ValueError):
        MachineCredential(customer.token)
