"""A login warms the user's cache: the auth service calls the account service's internal
WarmCache with the new session and does not wait for it. The visit's first balance and
recent-transactions reads are then hits; a second warm-up costs PostgreSQL nothing; a warm-up
whose load is overtaken by a transfer never writes the older version; and a login whose
warm-up hangs answers anyway."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.service_layer.cache_layout import accounts_key, balance_key, recent_key
from services.auth.bootstrap import AuthApp, build_auth_app
from shared.config import Settings
from tests.support.account import (
    account_settings,
    cached_entry,
    counting,
    eventually,
    new_customer,
    publish_newest_events,
    serving,
)
from tests.support.auth import PASSWORD, auth_settings, random_address

pytestmark = pytest.mark.integration

CACHE = account_pb2.READ_SOURCE_CACHE


@contextlib.asynccontextmanager
async def auth_service(settings: Settings, account_target: str
                       ) -> AsyncIterator[tuple[AuthApp, auth_pb2_grpc.AuthServiceStub]]:
    app = build_auth_app(auth_settings(settings, account_target=account_target), port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield app, auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await app.stop()


async def registered_customer(engine: AsyncEngine, unique: Callable[[str], str],
                              deposit: int = 2_500) -> tuple[str, str]:
    """(email, account id) of a user who can log in, with a funded account."""
    email = unique("warm") + "@example.com"
    await seed.ensure_settlement_account(engine)
    user = await seed.create_user(engine, email, PASSWORD, "Warm Test")
    account = await seed.create_account(engine, user)
    await seed.deposit(engine, account, deposit)
    return email, account


async def login(stub: Any, email: str) -> str:
    reply = await stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD),
                             metadata=(("x-forwarded-for", random_address()),))
    return str(reply.token)


async def test_after_a_login_the_first_reads_are_hits(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    email, account = await registered_customer(engine, unique)
    readers, wrap = counting()
    async with serving(account_settings(base_settings), wrap_reader=wrap) as (app, stub), \
            auth_service(base_settings, f"ipv4:127.0.0.1:{app.grpc.port}") as (auth, auth_stub):
        token = await login(auth_stub, email)
        await auth.warmer.wait_idle()
        for key in (balance_key(account), recent_key(account)):
            entry = await cached_entry(app.redis, key)
            assert entry is not None and not entry.tombstone and entry.version == 2, key
        assert readers[0].loads["snapshots"] == 1  # one statement for the whole warm-up
        metadata = (("authorization", f"Bearer {token}"),)
        balance = await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=account),
                                        metadata=metadata)
        recent = await stub.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=account), metadata=metadata)
        assert (balance.source, balance.balance.minor_units) == (CACHE, 2_500)
        assert (recent.source, [e.amount.minor_units for e in recent.entries]) == (CACHE, [2_500])
        assert readers[0].loads["balance"] == readers[0].loads["recent_transactions"] == 0

        # The next login finds everything cached: PostgreSQL is not asked again.
        again = await stub.WarmCache(account_pb2.WarmCacheRequest(), metadata=metadata)
        assert (again.accounts, again.loaded, again.filled) == (1, False, 0)
        assert readers[0].loads["snapshots"] == 1
        user_id = token.split(".")[0]
        assert await cached_entry(app.redis, accounts_key(user_id)) is not None


async def test_a_warm_up_overtaken_by_a_transfer_never_writes_the_older_version(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, deposit=1_000)  # version 2
    readers, wrap = counting()
    async with serving(account_settings(base_settings), wrap_reader=wrap) as (app, stub):
        reader = readers[0]
        # 1. The warm-up reads version 2 and is held before its fills.
        reader.hold = asyncio.Event()

        async def warm_up() -> Any:
            return await stub.WarmCache(account_pb2.WarmCacheRequest(), metadata=alice.metadata)

        warm = asyncio.create_task(warm_up())
        await asyncio.wait_for(reader.read_done.wait(), 5)
        # 2. A transfer commits version 3 and its event reaches the cache.
        await seed.deposit(engine, alice.account_id, 500)
        await publish_newest_events(engine, app.settings, [alice.account_id])

        async def event_applied() -> bool:
            entry = await cached_entry(app.redis, balance_key(alice.account_id))
            return entry is not None and entry.version == 3

        await eventually(event_applied)
        # 3. The warm-up's fills of version 2 come last and are refused.
        reader.hold.set()
        done = await warm
        assert (done.loaded, done.filled) == (True, 0)
        for key in (balance_key(alice.account_id), recent_key(alice.account_id)):
            entry = await cached_entry(app.redis, key)
            assert entry is not None and entry.version == 3, key
        reader.hold = None
        balance = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account_id=alice.account_id), metadata=alice.metadata)
        assert (balance.version, balance.balance.minor_units) == (3, 1_500)


class HangingWarmUps(account_pb2_grpc.AccountServiceServicer):
    """An account service whose WarmCache hangs until the test lets it go."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def WarmCache(self, request: Any, context: Any) -> Any:
        self.called.set()
        await self.release.wait()
        return account_pb2.WarmCacheResponse()


async def test_a_login_answers_while_its_warm_up_hangs(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    email, _ = await registered_customer(engine, unique)
    hanging = HangingWarmUps()
    server = grpc.aio.server()
    account_pb2_grpc.add_AccountServiceServicer_to_server(hanging, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        settings = dataclasses.replace(base_settings, service_name="auth")
        async with auth_service(settings, f"ipv4:127.0.0.1:{port}") as (auth, auth_stub):
            token = await login(auth_stub, email)  # answered ...
            await asyncio.wait_for(hanging.called.wait(), 5)
            assert not hanging.release.is_set()  # ... while its warm-up is still held
            assert token.count(".") == 2
            hanging.release.set()
            await auth.warmer.wait_idle()
    finally:
        hanging.release.set()
        await server.stop(0)
