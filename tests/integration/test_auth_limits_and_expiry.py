"""Brute-force limits and sliding session expiry, with short windows set in the test settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc
from psycopg import AsyncConnection

from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from services.auth.service_layer.attempt_limits import email_counter_key
from shared.config import Settings
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.db_roles import service_settings
from tests.support.rpc import bearer, rpc_error

pytestmark = pytest.mark.integration

WINDOW_S = 900
DELAY_S = 600  # the email's delay after its free failures: far longer than any test step
TTL_S = 2


@pytest_asyncio.fixture
async def short_window_auth(
    base_settings: Settings,
) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    app = build_auth_app(auth_settings(
        base_settings, login_window_s=WINDOW_S, login_max_failures=5,
        login_address_max_failures=5, login_email_free_failures=5, login_delay_base_s=DELAY_S,
        login_delay_max_s=DELAY_S), port=0)
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


async def let_the_delay_pass(settings: Settings, email: str) -> None:
    """Move the email's last attempt DELAY_S into the past, as waiting would (no test sleeps ten
    minutes); its failures stay counted."""
    async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE login_attempt_windows SET window_ends_at = window_ends_at"
            " - make_interval(secs => %s) WHERE counter_key = %s",
            (DELAY_S, email_counter_key(email)))


async def test_guesses_from_many_addresses_bring_a_delay_not_a_lockout(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, base_settings: Settings,
    unique: Callable[[str], str],
) -> None:
    auth = short_window_auth
    email = unique("brute") + "@example.com"
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="B"))
    # Each guess from another address: the email's rising delay is what slows them.
    for attempt in range(5):
        err = await rpc_error(login(auth, email, f"guess number {attempt}", random_address()))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    owner = random_address()
    delayed = await rpc_error(login(auth, email, PASSWORD, owner))
    assert delayed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = int(dict(delayed.trailing_metadata() or ())["retry-after"])
    assert DELAY_S - 60 < retry_after <= DELAY_S  # the delay, not the window
    assert "too many failed login attempts" in (delayed.details() or "")
    # The owner, from an address that made no guesses, gets in once the delay has passed.
    await let_the_delay_pass(base_settings, email)
    assert (await login(auth, email, PASSWORD, owner)).token


async def test_the_owners_device_token_gets_in_while_the_email_waits(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, unique: Callable[[str], str]
) -> None:
    auth = short_window_auth
    email = unique("device") + "@example.com"
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="D"))
    device = (await login(auth, email, PASSWORD, random_address())).device_token
    assert device
    for attempt in range(5):
        await rpc_error(login(auth, email, f"guess number {attempt}", random_address()))
    owner = random_address()
    waiting = await rpc_error(login(auth, email, PASSWORD, owner))
    assert waiting.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with_device = await auth.Login(
        auth_pb2.LoginRequest(email=email, password=PASSWORD, device_token=device),
        metadata=(("x-forwarded-for", owner),))
    assert with_device.token and with_device.device_token
    bad = await rpc_error(auth.Login(
        auth_pb2.LoginRequest(email=email, password=PASSWORD, device_token="not a token!"),
        metadata=(("x-forwarded-for", owner),)))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "device_token" in bad.details()


async def test_five_guesses_from_one_address_stop_that_address_for_that_email(
    short_window_auth: auth_pb2_grpc.AuthServiceStub, base_settings: Settings,
    unique: Callable[[str], str],
) -> None:
    auth = short_window_auth
    email = unique("pair") + "@example.com"
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="P"))
    guesser = random_address()
    for attempt in range(5):
        await rpc_error(login(auth, email, f"guess number {attempt}", guesser))
    await let_the_delay_pass(base_settings, email)  # the address's limit has not passed
    stopped = await rpc_error(login(auth, email, PASSWORD, guesser))
    assert stopped.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
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
        service_settings(settings, "account"), port=0)
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
