"""The auth service over real gRPC, PostgreSQL and the Redis Cluster: register, login, use,
logout seen by a second account replica, password change, sessions, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

from services.account.bootstrap import AccountApp, build_account_app
from services.auth.bootstrap import AuthApp, build_auth_app
from services.auth.domain import INVALID_CREDENTIALS_MESSAGE
from shared.config import Settings
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.redis_users import for_service
from tests.support.rpc import bearer, rpc_error

pytestmark = pytest.mark.integration

@dataclasses.dataclass
class Stack:
    auth: auth_pb2_grpc.AuthServiceStub
    accounts: list[account_pb2_grpc.AccountServiceStub]
    address: str

    async def register(self, email: str, password: str = PASSWORD,
                       name: str = "Test User") -> auth_pb2.RegisterResponse:
        return await self.auth.Register(
            auth_pb2.RegisterRequest(email=email, password=password, name=name)
        )

    async def login(self, email: str, password: str = PASSWORD,
                    address: str | None = None) -> auth_pb2.LoginResponse:
        return await self.auth.Login(
            auth_pb2.LoginRequest(email=email, password=password),
            metadata=(("x-forwarded-for", address or self.address),
                      ("x-user-agent", "pytest-browser/1.0")),
        )


@pytest_asyncio.fixture(scope="module")
async def stack(base_settings: Settings) -> AsyncIterator[Stack]:
    """One auth service and two replicas of the account service, each with its own clients."""
    auth = build_auth_app(auth_settings(base_settings), port=0)
    replicas: list[AccountApp] = [
        build_account_app(for_service(base_settings, "account"), port=0)
        for _ in range(2)
    ]
    started: list[AuthApp | AccountApp] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for app in (auth, *replicas):
            await app.start()
            started.append(app)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}")
                    for app in (auth, *replicas)]
        yield Stack(auth_pb2_grpc.AuthServiceStub(channels[0]),
                    [account_pb2_grpc.AccountServiceStub(c) for c in channels[1:]],
                    random_address())
    finally:
        for channel in channels:
            await channel.close()
        for app in started:
            await app.stop()


async def test_register_login_use_logout_is_seen_by_a_second_replica_within_a_second(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    email = unique("alice") + "@Example.com"
    made = await stack.register(email)
    session = await stack.login(email.lower())
    assert session.user_id == made.user_id
    assert session.expires_at.seconds > time.time() + 800

    for replica in stack.accounts:
        balance = await replica.GetBalance(
            account_pb2.GetBalanceRequest(account_id=made.account_id),
            metadata=bearer(session.token),
        )
        assert balance.balance.minor_units == 0 and balance.balance.currency == "EUR"

    await stack.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(session.token))
    logged_out_at = time.monotonic()
    second = stack.accounts[1]
    while True:
        try:
            await second.GetBalance(account_pb2.GetBalanceRequest(account_id=made.account_id),
                                    metadata=bearer(session.token))
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() - logged_out_at < 1.0, "revoked token still accepted after 1 s"
        await asyncio.sleep(0.05)
    for replica in stack.accounts:
        err = await rpc_error(replica.GetBalance(
            account_pb2.GetBalanceRequest(account_id=made.account_id),
            metadata=bearer(session.token)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(stack.auth.ValidateSession(
        auth_pb2.ValidateSessionRequest(token=session.token)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_register_opens_the_first_account_in_the_chosen_currency(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    email = unique("usd") + "@example.com"
    made = await stack.auth.Register(auth_pb2.RegisterRequest(
        email=email, password=PASSWORD, name="Dollar User", currency="usd"))
    session = await stack.login(email)
    balance = await stack.accounts[0].GetBalance(
        account_pb2.GetBalanceRequest(account_id=made.account_id), metadata=bearer(session.token))
    assert balance.balance.currency == "USD"

    err = await rpc_error(stack.register(email.upper(), name="Again"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_validate_and_list_sessions(stack: Stack, unique: Callable[[str], str]) -> None:
    email = unique("list") + "@example.com"
    made = await stack.register(email)
    first = await stack.login(email)
    second = await stack.login(email)

    checked = await stack.auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=first.token))
    assert (checked.user_id, checked.session_id) == (made.user_id, first.session_id)
    assert checked.expires_at.seconds >= int(time.time()) + 890

    listed = await stack.auth.ListSessions(auth_pb2.ListSessionsRequest(),
                                           metadata=bearer(second.token))
    by_id = {s.session_id: s for s in listed.sessions}
    assert set(by_id) == {first.session_id, second.session_id}
    assert by_id[second.session_id].current and not by_id[first.session_id].current
    assert by_id[first.session_id].client_address == stack.address
    assert by_id[first.session_id].user_agent == "pytest-browser/1.0"

    err = await rpc_error(stack.auth.ListSessions(auth_pb2.ListSessionsRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_change_password_revokes_the_other_sessions(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    email = unique("change") + "@example.com"
    made = await stack.register(email)
    keep, *others = [await stack.login(email) for _ in range(3)]
    new_password = "a brand new passphrase 7"

    err = await rpc_error(stack.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password="not my password",
                                       new_password=new_password),
        metadata=(*bearer(keep.token), ("x-forwarded-for", stack.address))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="tooshort"),
        metadata=bearer(keep.token)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "at least 12" in err.details()

    reply = await stack.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
        metadata=(*bearer(keep.token), ("x-forwarded-for", stack.address)))
    assert reply.revoked_sessions == 2

    request = account_pb2.GetBalanceRequest(account_id=made.account_id)
    await stack.accounts[1].GetBalance(request, metadata=bearer(keep.token))
    for other in others:
        err = await rpc_error(stack.accounts[1].GetBalance(request, metadata=bearer(other.token)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(stack.login(email))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await stack.login(email, new_password)).token


@pytest.mark.parametrize(
    ("email", "password", "name", "rule"),
    [
        ("", PASSWORD, "N", "email is required"),
        ("x" * 10_000 + "@example.com", PASSWORD, "N", "at most 254"),
        ("not-an-email", PASSWORD, "N", "not a valid address"),
        ("ok-{}@example.com", "", "N", "password is required"),
        ("ok-{}@example.com", "p" * 100_000, "N", "at most 128"),
        ("ok-{}@example.com", "qwertyuiop123", "N", "too easy to guess"),
        ("ok-{}@example.com", PASSWORD, "", "name is required"),
        ("ok-{}@example.com", PASSWORD, "n" * 201, "at most 200"),
    ],
)
async def test_register_bad_input_is_invalid_argument(
    stack: Stack, email: str, password: str, name: str, rule: str
) -> None:
    err = await rpc_error(stack.register(email.format(uuid.uuid4().hex[:8]), password, name))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in err.details()


@pytest.mark.parametrize(
    ("email", "password", "rule"),
    [
        ("", PASSWORD, "email is required"),
        ("e" * 100_000, PASSWORD, "at most 254"),
        ("someone@example.com", "", "password is required"),
        ("someone@example.com", "p" * 100_000, "at most 128"),
    ],
)
async def test_login_bad_input_is_invalid_argument(
    stack: Stack, email: str, password: str, rule: str
) -> None:
    err = await rpc_error(stack.login(email, password))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in err.details()


async def test_unknown_email_and_wrong_password_get_the_same_answer(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    email = unique("enum") + "@example.com"
    await stack.register(email)
    wrong = await rpc_error(stack.login(email, "wrong password 123", random_address()))
    unknown = await rpc_error(stack.login(unique("nobody") + "@example.com", PASSWORD,
                                          random_address()))
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details() == INVALID_CREDENTIALS_MESSAGE


async def test_malformed_and_forged_tokens_are_unauthenticated(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    alice_email, bob_email = unique("alice") + "@example.com", unique("bob") + "@example.com"
    alice = await stack.register(alice_email)
    bob = await stack.register(bob_email)
    alice_session = await stack.login(alice_email)
    bob_session = await stack.login(bob_email)
    user_id, session_id, secret = alice_session.token.split(".")
    forged_tokens = [
        "garbage",
        # Long, yet with the other headers below gRPC's 8 KiB soft metadata limit: between it and
        # the 16 KiB hard limit gRPC refuses a random share of calls (RESOURCE_EXHAUSTED).
        "x" * 7_000,
        f"{user_id}.{session_id}",
        f"{user_id}.{session_id}.{secret}.{secret}",
        f"{user_id}.{session_id}.{'A' * 43}",  # forged secret
        f"{user_id}.{uuid.uuid4()}.{secret}",  # forged session id
        f"{bob.user_id}.{session_id}.{secret}",  # someone else's user id
        f"{user_id}.{bob_session.session_id}.{bob_session.token.split('.')[2]}",  # mixed
        f"{user_id.upper()}.{session_id}.{secret}",
    ]
    request = account_pb2.GetBalanceRequest(account_id=alice.account_id)
    for token in forged_tokens:
        for call in (
            stack.accounts[0].GetBalance(request, metadata=bearer(token)),
            stack.auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=token)),
        ):
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (token[:80], err)
            assert "invalid or expired" in err.details()
    for metadata in ((("authorization", "Basic dXNlcjpwYXNz"),), (("authorization", "Bearer "),),
                     (("authorization", alice_session.token),)):
        err = await rpc_error(stack.accounts[0].GetBalance(request, metadata=metadata))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing above broke the services: the real token still works everywhere.
    await stack.accounts[0].GetBalance(request, metadata=bearer(alice_session.token))
    await stack.auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=alice_session.token))
