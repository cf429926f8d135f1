"""The services accept the gateway's signed caller assertion instead of re-checking the session
in Redis, and refuse forged, expired or unkeyed ones."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import build_account_app
from shared.auth_context import Caller
from shared.caller_assertion import CALLER_ASSERTION_HEADER, CallerAssertions
from shared.config import Settings
from shared.sessions import SessionStore
from tests.conftest import TEST_CALLER_ASSERTION_KEY

pytestmark = pytest.mark.integration


async def test_assertions_are_verified_by_the_service(
    make_settings: Callable[..., Settings], engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    await seed.ensure_settlement_account(engine)
    user = await seed.create_user(engine, unique("ca") + "@example.com", "pw", "Assert",
                                  password_hash="!")
    account = await seed.create_account(engine, user)
    await seed.deposit(engine, account, 700)
    session = await SessionStore(engine, None, 900).create(user)
    caller = Caller(user, session.session_id)
    assertions = CallerAssertions(TEST_CALLER_ASSERTION_KEY)
    request = account_pb2.GetBalanceRequest(account_id=account)

    keyed = build_account_app(make_settings(service_name="account"), port=0)
    unkeyed = build_account_app(make_settings(service_name="account", caller_assertion_key=""),
                                port=0)
    await keyed.start()
    await unkeyed.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{keyed.grpc.port}") as channel:
            stub = account_pb2_grpc.AccountServiceStub(channel)
            reply = await stub.GetBalance(
                request, metadata=((CALLER_ASSERTION_HEADER, assertions.mint(caller)),)
            )
            assert reply.balance.minor_units == 700

            # Internal callers without an assertion still authenticate with the token.
            reply = await stub.GetBalance(
                request, metadata=(("authorization", f"Bearer {session.token}"),)
            )
            assert reply.balance.minor_units == 700

            forged = CallerAssertions("another-key-" + "x" * 32).mint(caller)
            expired = assertions.mint(caller, now=time.time() - 10)
            for bad in (forged, expired, assertions.mint(caller)[:-2], "garbage"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetBalance(request, metadata=((CALLER_ASSERTION_HEADER, bad),))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "700" not in (err.value.details() or "")

        async with grpc.aio.insecure_channel(f"127.0.0.1:{unkeyed.grpc.port}") as channel:
            stub = account_pb2_grpc.AccountServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetBalance(
                    request, metadata=((CALLER_ASSERTION_HEADER, assertions.mint(caller)),)
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await keyed.stop()
        await unkeyed.stop()
