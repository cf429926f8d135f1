"""Brute-force limits and sliding session expiry, with short windows set in the test settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from shared.config import Settings
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.redis_users import for_service
from tests.support.rpc import bearer, rpc_error

pytestmark = pytest.mark.integration

WINDOW_S = 3  # the five failures must land inside it even on a loaded machine
TTL_S = 2


@pytest_asyncio.fixture
async def short_window_auth(
    base_settings: Settings,
) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    app = build_auth_app(auth_settings(base_settings, login_window_s=WINDOW_S,
                                       login_max_failures=5), port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await app.stop()


async def login(auth: auth_pb2_grpc.AuthServiceStub, email: str, password: str,
                address: str) -> auth_pb2.LoginResponse:
    return await auth.Login(auth_pb2.LoginRequest(email=email, password=password),
                            metadata=(("x-forwarded-for", address),))


async def test_sixth_attempt_is_refused_even_with_the_right_password_then_unlocks(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, unique: Callable[[str], str]
) -> None:
    auth = short_window_auth
    email = unique("brute") + "@example.com"
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="B"))
    # Each guess from another address: the per-email counter is what stops them.
    for attempt in range(5):
        err = await rpc_error(login(auth, email, f"guess number {attempt}", random_address()))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    locked = await rpc_error(login(auth, email, PASSWORD, random_address()))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = dict(locked.trailing_metadata() or ())["retry-after"]
    assert 1 <= int(retry_after) <= WINDOW_S
    assert "too many failed login attempts" in locked.details()

    await asyncio.sleep(WINDOW_S + 0.2)
    assert (await login(auth, email, PASSWORD, random_address())).token


async def test_failures_from_one_address_lock_that_address_for_every_email(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, unique: Callable[[str], str]
) -> None:
    auth = short_window_auth
    email = unique("victim") + "@example.com"
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="V"))
    address = random_address()
    for n in range(5):
        await rpc_error(login(auth, unique(f"spray{n}") + "@example.com", PASSWORD, address))
    locked = await rpc_error(login(auth, email, PASSWORD, address))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same user from elsewhere is fine: the address is locked, not the account.
    assert (await login(auth, email, PASSWORD, random_address())).token


async def test_successful_logins_do_not_count(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, unique: Callable[[str], str]
) -> None:
    email = unique("often") + "@example.com"
    await short_window_auth.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="O"))
    address = random_address()
    for _ in range(8):
        await login(short_window_auth, email, PASSWORD, address)


async def test_used_sessions_slide_and_idle_ones_expire(
    base_settings: Settings, unique: Callable[[str], str]
) -> None:
    settings = auth_settings(base_settings, session_ttl_s=TTL_S)
    auth_app = build_auth_app(settings, port=0)
    account_app = build_account_app(
        for_service(settings, "account"), port=0)
    await auth_app.start()
    await account_app.start()
    try:
        async with (grpc.aio.insecure_channel(f"127.0.0.1:{auth_app.grpc.port}") as a_chan,
                    grpc.aio.insecure_channel(f"127.0.0.1:{account_app.grpc.port}") as b_chan):
            auth = auth_pb2_grpc.AuthServiceStub(a_chan)
            accounts = account_pb2_grpc.AccountServiceStub(b_chan)
            email = unique("slide") + "@example.com"
            made = await auth.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="S"))
            address = random_address()
            used = await login(auth, email, PASSWORD, address)
            idle = await login(auth, email, PASSWORD, address)
            balance = account_pb2.GetBalanceRequest(account_id=made.account_id)

            started = time.monotonic()
            while time.monotonic() - started < 2.5 * TTL_S:  # well past the first expiry
                await accounts.GetBalance(balance, metadata=bearer(used.token))
                await asyncio.sleep(TTL_S / 4)
            checked = await auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=used.token))
            assert checked.expires_at.seconds >= int(time.time()) + TTL_S - 1

            for call in (accounts.GetBalance(balance, metadata=bearer(idle.token)),
                         auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=idle.token))):
                err = await rpc_error(call)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED

            await asyncio.sleep(TTL_S + 0.5)  # now the used one goes idle too
            err = await rpc_error(accounts.GetBalance(balance, metadata=bearer(used.token)))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await account_app.stop()
        await auth_app.stop()
