"""Every AccountService RPC over a real gRPC channel on the shared PostgreSQL and Redis Cluster:
results, read sources, ownership (IDOR), input validation, cursors, read-your-writes."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from bank.v1 import account_pb2, account_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import AccountApp
from services.account.service_layer.cache_layout import balance_key, loans_key, recent_key
from services.account.service_layer.pagination import transaction_page_tokens
from shared.config import Settings
from shared.page_tokens import page_token_key
from tests.support.account import Customer, account_settings, cached_entry, new_customer, serving
from tests.support.rpc import rpc_error

pytestmark = pytest.mark.integration

CACHE = account_pb2.READ_SOURCE_CACHE
DATABASE = account_pb2.READ_SOURCE_DATABASE


@pytest_asyncio.fixture
async def service(
    base_settings: Settings,
) -> AsyncIterator[tuple[AccountApp, account_pb2_grpc.AccountServiceStub]]:
    async with serving(account_settings(base_settings)) as running:
        yield running


async def add_loan(engine: AsyncEngine, customer: Customer, principal: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO loans (account_id, user_id, principal, outstanding, currency,"
                 " interest_rate_bps) VALUES (CAST(:a AS uuid), CAST(:u AS uuid), :p, :p,"
                 " 'EUR', 450)"),
            {"a": customer.account_id, "u": customer.user_id, "p": principal},
        )


async def test_balance_is_served_from_the_cache_after_the_first_read(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str], redis_admin: RedisCluster,
) -> None:
    app, stub = service
    alice = await new_customer(engine, unique, deposit=12_345)
    request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
    first = await stub.GetBalance(request, metadata=alice.metadata)
    second = await stub.GetBalance(request, metadata=alice.metadata)
    assert (first.source, second.source) == (DATABASE, CACHE)
    for reply in (first, second):
        assert reply.balance.minor_units == 12_345
        assert reply.balance.formatted == "123.45" and reply.balance.currency == "EUR"
        assert reply.version == 2 and reply.account_id == alice.account_id
    entry = await cached_entry(app.redis, balance_key(alice.account_id))
    assert entry is not None and (entry.version, entry.owner) == (2, alice.user_id)
    ttl_ms = await redis_admin.pttl(balance_key(alice.account_id))
    assert 54_000 - 1000 <= ttl_ms <= 66_000  # 60 s +- 10 % jitter


async def test_recent_transactions_are_the_last_ten_and_cached(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str], redis_admin: RedisCluster,
) -> None:
    app, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    for amount in range(1, 13):
        await seed.deposit(engine, alice.account_id, amount * 100, description=f"d{amount}")
    request = account_pb2.ListRecentTransactionsRequest(account_id=alice.account_id)
    first = await stub.ListRecentTransactions(request, metadata=alice.metadata)
    second = await stub.ListRecentTransactions(request, metadata=alice.metadata)
    assert (first.source, second.source) == (DATABASE, CACHE)
    assert first.entries == second.entries and first.version == second.version == 13
    assert [e.description for e in first.entries] == [f"d{n}" for n in range(12, 2, -1)]
    newest = first.entries[0]
    assert newest.amount.minor_units == 1200 and newest.balance_after.minor_units == 7800
    assert newest.account_id == alice.account_id and newest.transfer_id
    assert newest.created_at.seconds > 0
    assert await redis_admin.exists(recent_key(alice.account_id))


async def test_accounts_and_history_pages(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    _, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    savings = await seed.create_account(engine, alice.user_id, name="Savings")
    for amount in range(1, 26):
        await seed.deposit(engine, alice.account_id, amount)

    listed = await stub.ListAccounts(account_pb2.ListAccountsRequest(), metadata=alice.metadata)
    assert [a.account_id for a in listed.accounts] == [alice.account_id, savings]
    account = await stub.GetAccount(account_pb2.GetAccountRequest(account_id=alice.account_id),
                                    metadata=alice.metadata)
    assert account.owner_user_id == alice.user_id and account.balance.minor_units == 325
    assert account.status == account_pb2.ACCOUNT_STATUS_OPEN and account.version == 26

    seen: list[int] = []
    token = ""
    for _ in range(4):
        page = await stub.ListTransactions(
            account_pb2.ListTransactionsRequest(account_id=alice.account_id, page_size=10,
                                                page_token=token),
            metadata=alice.metadata,
        )
        seen.extend(e.amount.minor_units for e in page.entries)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(25, 0, -1))
    default_page = await stub.ListTransactions(
        account_pb2.ListTransactionsRequest(account_id=alice.account_id), metadata=alice.metadata
    )
    assert len(default_page.entries) == 20


async def test_history_cursor_tampering_is_an_invalid_argument(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    _, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    other = await seed.create_account(engine, alice.user_id)
    for amount in (1, 2, 3):
        await seed.deposit(engine, alice.account_id, amount)
    page = await stub.ListTransactions(
        account_pb2.ListTransactionsRequest(account_id=alice.account_id, page_size=1),
        metadata=alice.metadata,
    )
    token = page.next_page_token
    assert token
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for bad_token, account_id in [(tampered, alice.account_id), ("garbage!", alice.account_id),
                                  (token, other)]:
        failure = await rpc_error(stub.ListTransactions(
            account_pb2.ListTransactionsRequest(account_id=account_id, page_token=bad_token),
            metadata=alice.metadata,
        ))
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_forged_and_out_of_range_cursors_are_refused_by_the_service(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    base_settings: Settings, unique: Callable[[str], str],
) -> None:
    """A client knows the token format; without the server's key its token is refused, and a
    position out of range is refused even under the right key."""
    _, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    for amount in (1, 2):
        await seed.deposit(engine, alice.account_id, amount)
    body = struct.pack(">Bqq", 1, int(time.time() * 1_000_000), 2**62)
    unkeyed = hashlib.blake2b(body + alice.account_id.encode(), digest_size=8,
                              person=b"bank.v1.txpage").digest()
    forged = base64.urlsafe_b64encode(body + unkeyed).rstrip(b"=").decode()
    keyed = transaction_page_tokens(page_token_key(base_settings))
    out_of_range = keyed.encode(alice.account_id, -5, 1)
    for bad_token in (forged, out_of_range):
        failure = await rpc_error(stub.ListTransactions(
            account_pb2.ListTransactionsRequest(account_id=alice.account_id, page_token=bad_token),
            metadata=alice.metadata,
        ))
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (failure.details() or "")


async def test_another_users_accounts_are_not_found_on_every_rpc(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    _, stub = service
    alice = await new_customer(engine, unique, deposit=5_000)
    mallory = await new_customer(engine, unique, deposit=1)
    await add_loan(engine, alice, 90_000)
    target = alice.account_id
    # Alice's entries are cached first: the hit path must check ownership as well.
    await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=target),
                          metadata=alice.metadata)
    await stub.ListRecentTransactions(
        account_pb2.ListRecentTransactionsRequest(account_id=target), metadata=alice.metadata)
    calls = [
        stub.GetAccount(account_pb2.GetAccountRequest(account_id=target),
                        metadata=mallory.metadata),
        stub.GetBalance(account_pb2.GetBalanceRequest(account_id=target),
                        metadata=mallory.metadata),
        stub.GetBalance(account_pb2.GetBalanceRequest(account_id=target, min_version=1),
                        metadata=mallory.metadata),
        stub.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=target),
            metadata=mallory.metadata),
        stub.ListTransactions(account_pb2.ListTransactionsRequest(account_id=target),
                              metadata=mallory.metadata),
    ]
    for call in calls:
        failure = await rpc_error(call)
        assert failure.code() == grpc.StatusCode.NOT_FOUND
        assert "5000" not in (failure.details() or "") and alice.user_id not in (
            failure.details() or "")
    mine = await stub.ListAccounts(account_pb2.ListAccountsRequest(), metadata=mallory.metadata)
    assert [a.account_id for a in mine.accounts] == [mallory.account_id]
    loans = await stub.ListLoans(account_pb2.ListLoansRequest(), metadata=mallory.metadata)
    assert list(loans.loans) == []
    missing = await rpc_error(stub.GetBalance(
        account_pb2.GetBalanceRequest(account_id="00000000-0000-4000-8000-000000000000"),
        metadata=mallory.metadata))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_malformed_ids_and_arguments_are_invalid(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    _, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    for bad in ["", "42", "not-a-uuid", "'; DROP TABLE accounts; --"]:
        for call in [
            stub.GetAccount(account_pb2.GetAccountRequest(account_id=bad),
                            metadata=alice.metadata),
            stub.GetBalance(account_pb2.GetBalanceRequest(account_id=bad),
                            metadata=alice.metadata),
            stub.ListRecentTransactions(
                account_pb2.ListRecentTransactionsRequest(account_id=bad),
                metadata=alice.metadata),
            stub.ListTransactions(account_pb2.ListTransactionsRequest(account_id=bad),
                                  metadata=alice.metadata),
        ]:
            assert (await rpc_error(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
    for call in [
        stub.GetBalance(account_pb2.GetBalanceRequest(account_id=alice.account_id,
                                                      min_version=-1), metadata=alice.metadata),
        stub.ListTransactions(account_pb2.ListTransactionsRequest(account_id=alice.account_id,
                                                                  page_size=-5),
                              metadata=alice.metadata),
    ]:
        assert (await rpc_error(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
    unauthenticated = await rpc_error(stub.ListAccounts(account_pb2.ListAccountsRequest()))
    assert unauthenticated.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_min_version_reads_through_an_older_entry(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    _, stub = service
    alice = await new_customer(engine, unique, deposit=1_000)
    request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
    assert (await stub.GetBalance(request, metadata=alice.metadata)).version == 2
    await seed.deposit(engine, alice.account_id, 500)  # committed, its event not published
    stale = await stub.GetBalance(request, metadata=alice.metadata)
    assert (stale.source, stale.version) == (CACHE, 2)
    fresh = await stub.GetBalance(
        account_pb2.GetBalanceRequest(account_id=alice.account_id, min_version=3),
        metadata=alice.metadata)
    assert (fresh.source, fresh.version, fresh.balance.minor_units) == (DATABASE, 3, 1_500)
    after = await stub.GetBalance(request, metadata=alice.metadata)
    assert (after.source, after.version) == (CACHE, 3)  # the read-through filled it
    recent = await stub.ListRecentTransactions(
        account_pb2.ListRecentTransactionsRequest(account_id=alice.account_id, min_version=3),
        metadata=alice.metadata)
    assert recent.version == 3 and len(recent.entries) == 2


async def test_loans_are_cached_as_an_api_response(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str], redis_admin: RedisCluster,
) -> None:
    app, stub = service
    alice = await new_customer(engine, unique, deposit=0)
    await add_loan(engine, alice, 250_000)
    loans = await stub.ListLoans(account_pb2.ListLoansRequest(), metadata=alice.metadata)
    assert [(loan.principal.minor_units, loan.interest_rate_bps, loan.status)
            for loan in loans.loans] == [(250_000, 450, account_pb2.LOAN_STATUS_ACTIVE)]
    assert 270_000 - 1000 <= await redis_admin.pttl(loans_key(alice.user_id)) <= 330_000
    again = await stub.ListLoans(account_pb2.ListLoansRequest(), metadata=alice.metadata)
    assert again == loans


async def test_cache_disabled_reads_postgres_every_time(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
    redis_admin: RedisCluster,
) -> None:
    alice = await new_customer(engine, unique, deposit=777)
    async with serving(account_settings(base_settings, cache_enabled=False)) as (app, stub):
        assert app.events is None
        request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
        for _ in range(3):
            reply = await stub.GetBalance(request, metadata=alice.metadata)
            assert (reply.source, reply.balance.minor_units) == (DATABASE, 777)
        assert not await redis_admin.exists(balance_key(alice.account_id))


async def test_a_foreign_caller_leaves_no_owner_id_in_redis(
    service: tuple[AccountApp, account_pb2_grpc.AccountServiceStub], engine: AsyncEngine,
    unique: Callable[[str], str], redis_admin: RedisCluster,
) -> None:
    """A cache entry carries its account's owner id: Mallory asking for Alice's uncached
    account is refused like a missing one, and nothing of Alice's is written to Redis by it
    (no entry, no lease). Alice's own read then fills the cache as usual."""
    _, stub = service
    alice = await new_customer(engine, unique, deposit=4_200)
    mallory = await new_customer(engine, unique, deposit=0)
    keys = [balance_key(alice.account_id), recent_key(alice.account_id)]
    calls = [
        stub.GetBalance(account_pb2.GetBalanceRequest(account_id=alice.account_id),
                        metadata=mallory.metadata),
        stub.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=alice.account_id),
            metadata=mallory.metadata),
    ]
    for call in calls:
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    assert await redis_admin.exists(*keys, *(key + ":lease" for key in keys)) == 0
    mine = await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=alice.account_id),
                                 metadata=alice.metadata)
    assert mine.source == DATABASE
    entry = await cached_entry(redis_admin, balance_key(alice.account_id))
    assert entry is not None and entry.owner == alice.user_id
