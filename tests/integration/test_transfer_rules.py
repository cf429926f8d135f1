"""Transfer rules over a real gRPC channel, PostgreSQL and Redis Cluster: validation (status and
nothing moved), idempotency (Stripe's rules), ownership (IDOR), reads and pagination."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from bank.v1 import transfer_pb2, transfer_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from tests.support.transfer import (
    Customer,
    account_state,
    ledger_problems,
    new_customer,
    running_transfer_app,
    transfer_request,
)

pytestmark = pytest.mark.integration

MAX_AMOUNT = 1_000_000


@pytest.fixture(scope="module")
async def stub(base_settings: Settings) -> AsyncIterator[transfer_pb2_grpc.TransferServiceStub]:
    settings = dataclasses.replace(base_settings, max_transfer_minor_units=MAX_AMOUNT)
    async with running_transfer_app(settings) as (_, transfer_stub):
        yield transfer_stub


async def expect_error(call: Any, code: grpc.StatusCode, needle: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    assert needle in details
    return details


async def test_a_transfer_moves_money_with_two_entries_and_returns_the_new_balance(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=10_000)
    bob = await new_customer(engine, unique)
    source = alice.accounts[0]
    reply = await stub.CreateTransfer(
        transfer_request(source, bob.accounts[0], 2_550, unique("k"), description="rent"),
        metadata=alice.metadata,
    )
    assert reply.status == transfer_pb2.TRANSFER_STATUS_COMPLETED
    assert reply.amount.formatted == "25.50"
    assert reply.source_balance.account_id == source
    assert reply.source_balance.balance.minor_units == 7_450
    assert reply.source_balance.version == 3  # created 1, deposit 2, this transfer 3
    state = await account_state(engine, [source, bob.accounts[0]])
    assert {(b, v) for _, b, v in state["balances"]} == {(7_450, 3), (2_550, 2)}
    assert await ledger_problems(engine, [source, bob.accounts[0]]) == []


async def validation_cases(
    engine: AsyncEngine, unique: Callable[[str], str]
) -> tuple[Customer, Customer, list[str], list[tuple[str, Any, grpc.StatusCode, str]]]:
    alice = await new_customer(engine, unique, accounts=2, deposit=5_000)
    bob = await new_customer(engine, unique, deposit=5_000)
    dollars = await new_customer(engine, unique, currency="USD")
    closed = await new_customer(engine, unique, accounts=2, deposit=5_000)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET status = 'closed' WHERE id = CAST(:a AS uuid)"),
            {"a": closed.accounts[1]},
        )
    mine, other = alice.accounts
    cases: list[tuple[str, Any, grpc.StatusCode, str]] = [
        ("zero", transfer_request(mine, other, 0, unique("k")),
         grpc.StatusCode.INVALID_ARGUMENT, "positive"),
        ("negative", transfer_request(mine, other, -10, unique("k")),
         grpc.StatusCode.INVALID_ARGUMENT, "positive"),
        ("over the maximum", transfer_request(mine, other, MAX_AMOUNT + 1, unique("k")),
         grpc.StatusCode.INVALID_ARGUMENT, "maximum"),
        ("same account", transfer_request(mine, mine, 10, unique("k")),
         grpc.StatusCode.INVALID_ARGUMENT, "differ"),
        ("malformed source", transfer_request("acc-1", other, 10, unique("k")),
         grpc.StatusCode.INVALID_ARGUMENT, "from_account_id"),
        ("malformed currency", transfer_request(mine, other, 10, unique("k"), currency="eur"),
         grpc.StatusCode.INVALID_ARGUMENT, "ISO-4217"),
        ("no idempotency key", transfer_request(mine, other, 10, ""),
         grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key is required"),
        ("amount currency differs from the accounts",
         transfer_request(mine, other, 10, unique("k"), currency="USD"),
         grpc.StatusCode.FAILED_PRECONDITION, "does not hold USD"),
        ("accounts in two currencies", transfer_request(mine, dollars.accounts[0], 10,
                                                        unique("k")),
         grpc.StatusCode.FAILED_PRECONDITION, "does not hold EUR"),
        ("unknown destination", transfer_request(mine, str(uuid.uuid4()), 10, unique("k")),
         grpc.StatusCode.NOT_FOUND, "not found"),
        ("unknown source", transfer_request(str(uuid.uuid4()), other, 10, unique("k")),
         grpc.StatusCode.NOT_FOUND, "not found"),
        ("someone else's source (IDOR)", transfer_request(bob.accounts[0], mine, 10,
                                                           unique("k")),
         grpc.StatusCode.NOT_FOUND, "not found"),
        ("closed destination", transfer_request(mine, closed.accounts[1], 10, unique("k")),
         grpc.StatusCode.FAILED_PRECONDITION, "closed"),
        ("insufficient funds", transfer_request(mine, other, 5_001, unique("k")),
         grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds"),
    ]
    involved = [*alice.accounts, *bob.accounts, *dollars.accounts, *closed.accounts]
    return alice, closed, involved, cases


async def test_every_validation_error_has_its_status_and_moves_nothing(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice, closed, involved, cases = await validation_cases(engine, unique)
    before = await account_state(engine, involved)
    for name, request, code, needle in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTransfer(request, metadata=alice.metadata)
        assert caught.value.code() == code, f"{name}: {caught.value.details()}"
        assert needle in (caught.value.details() or ""), name
    # A closed source account, as its owner sees it.
    await expect_error(
        stub.CreateTransfer(transfer_request(closed.accounts[1], closed.accounts[0], 10,
                                             unique("k")), metadata=closed.metadata),
        grpc.StatusCode.FAILED_PRECONDITION, "closed",
    )
    assert await account_state(engine, involved) == before


async def test_calls_without_a_valid_session_are_unauthenticated(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=100)
    request = transfer_request(alice.accounts[0], alice.accounts[1], 1, unique("k"))
    await expect_error(stub.CreateTransfer(request), grpc.StatusCode.UNAUTHENTICATED)
    forged = alice.token.rsplit(".", 1)[0] + ".forged"
    await expect_error(stub.CreateTransfer(request, metadata=(("authorization",
                                                                f"Bearer {forged}"),)),
                       grpc.StatusCode.UNAUTHENTICATED)
    assert (await account_state(engine, alice.accounts))["counts"] == (2, 2, 2)  # deposits


async def test_same_key_same_parameters_replays_the_identical_reply(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    request = transfer_request(alice.accounts[0], alice.accounts[1], 100, unique("k"), "EUR",
                               "once")
    first = await stub.CreateTransfer(request, metadata=alice.metadata)
    # Another transfer changes the source in between: the replay still shows the stored reply.
    await stub.CreateTransfer(transfer_request(alice.accounts[0], alice.accounts[1], 7,
                                               unique("k")), metadata=alice.metadata)
    again = await stub.CreateTransfer(request, metadata=alice.metadata)
    assert again.SerializeToString() == first.SerializeToString()
    state = await account_state(engine, alice.accounts)
    assert {b for _, b, _ in state["balances"]} == {893, 1_107}


async def test_same_key_other_parameters_is_refused_and_moves_nothing(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    bob = await new_customer(engine, unique)
    key = unique("k")
    mine, other = alice.accounts
    await stub.CreateTransfer(transfer_request(mine, other, 100, key), metadata=alice.metadata)
    before = await account_state(engine, [*alice.accounts, *bob.accounts])
    for changed in (
        transfer_request(mine, other, 101, key),
        transfer_request(mine, bob.accounts[0], 100, key),
        transfer_request(other, mine, 100, key),
        transfer_request(mine, other, 100, key, description="different"),
    ):
        await expect_error(stub.CreateTransfer(changed, metadata=alice.metadata),
                           grpc.StatusCode.ALREADY_EXISTS, "another request")
    assert await account_state(engine, [*alice.accounts, *bob.accounts]) == before


async def test_keys_are_scoped_per_user(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    bob = await new_customer(engine, unique, accounts=2, deposit=1_000)
    key = unique("shared-key")
    a = await stub.CreateTransfer(transfer_request(alice.accounts[0], alice.accounts[1], 5, key),
                                  metadata=alice.metadata)
    b = await stub.CreateTransfer(transfer_request(bob.accounts[0], bob.accounts[1], 5, key),
                                  metadata=bob.metadata)
    assert a.transfer_id != b.transfer_id


async def test_a_failed_outcome_is_stored_and_does_not_flip_later(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    from devstack import seed

    alice = await new_customer(engine, unique, accounts=2, deposit=100)
    request = transfer_request(alice.accounts[0], alice.accounts[1], 500, unique("k"))
    first = await expect_error(stub.CreateTransfer(request, metadata=alice.metadata),
                               grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds")
    await seed.deposit(engine, alice.accounts[0], 1_000)  # now the money would be there
    before = await account_state(engine, alice.accounts)
    again = await expect_error(stub.CreateTransfer(request, metadata=alice.metadata),
                               grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds")
    assert again == first
    assert await account_state(engine, alice.accounts) == before
    # The same key with other parameters is still "used for another request".
    await expect_error(
        stub.CreateTransfer(transfer_request(alice.accounts[0], alice.accounts[1], 50,
                                             request.idempotency_key), metadata=alice.metadata),
        grpc.StatusCode.ALREADY_EXISTS, "another request",
    )


async def test_fifty_concurrent_duplicates_make_exactly_one_transfer(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    request = transfer_request(alice.accounts[0], alice.accounts[1], 250, unique("k"))
    replies = await asyncio.gather(
        *(stub.CreateTransfer(request, metadata=alice.metadata) for _ in range(50)),
        return_exceptions=True,
    )
    ok = [r for r in replies if isinstance(r, transfer_pb2.Transfer)]
    # Duplicates wait for the first and get its stored reply; ABORTED would also be allowed.
    retry = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)
             and r.code() == grpc.StatusCode.ABORTED]
    assert len(ok) + len(retry) == 50, [r for r in replies if r not in ok and r not in retry]
    assert len({r.SerializeToString() for r in ok}) == 1
    state = await account_state(engine, alice.accounts)
    assert state["counts"] == (3, 4, 4)  # two deposits and this transfer
    assert {b for _, b, _ in state["balances"]} == {750, 1_250}


async def test_a_lost_reply_is_recovered_by_retrying_with_the_key(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    request = transfer_request(alice.accounts[0], alice.accounts[1], 40, unique("k"))
    # The client gives up almost at once: the transfer may or may not have committed.
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateTransfer(request, metadata=alice.metadata, timeout=0.0005)
    await asyncio.sleep(0.2)
    reply = await stub.CreateTransfer(request, metadata=alice.metadata)
    again = await stub.CreateTransfer(request, metadata=alice.metadata)
    assert reply == again
    state = await account_state(engine, alice.accounts)
    assert {b for _, b, _ in state["balances"]} == {960, 1_040}


async def test_get_and_list_show_only_the_callers_transfers(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    bob = await new_customer(engine, unique, deposit=1_000)
    made = [
        await stub.CreateTransfer(transfer_request(alice.accounts[0], alice.accounts[1], n,
                                                   unique("k")), metadata=alice.metadata)
        for n in range(1, 6)
    ]
    got = await stub.GetTransfer(transfer_pb2.GetTransferRequest(transfer_id=made[2].transfer_id),
                                 metadata=alice.metadata)
    assert got == made[2]
    await expect_error(
        stub.GetTransfer(transfer_pb2.GetTransferRequest(transfer_id=made[2].transfer_id),
                         metadata=bob.metadata),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.GetTransfer(transfer_pb2.GetTransferRequest(transfer_id="nope"),
                         metadata=alice.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTransfers(
            transfer_pb2.ListTransfersRequest(page_size=2, page_token=token),
            metadata=alice.metadata,
        )
        assert len(page.transfers) <= 2
        seen += [t.transfer_id for t in page.transfers]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.transfer_id for t in reversed(made)]
    bobs = await stub.ListTransfers(transfer_pb2.ListTransfersRequest(), metadata=bob.metadata)
    assert list(bobs.transfers) == []
    await expect_error(
        stub.ListTransfers(transfer_pb2.ListTransfersRequest(page_token="garbage!"),
                           metadata=alice.metadata),
        grpc.StatusCode.INVALID_ARGUMENT, "page_token",
    )
