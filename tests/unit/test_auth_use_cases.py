"""The auth use cases over fakes: enumeration, brute force, rehash, password change."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from services.auth.adapters.fakes import (
    CountingHasher,
    FakeAttemptCounters,
    FakeCacheWarmer,
    FakeSessions,
    FakeUserRepository,
)
from services.auth.adapters.password_hasher import Argon2Params, Argon2PasswordHasher
from services.auth.adapters.work_pool import BoundedWorkPool
from services.auth.domain import (
    INVALID_CREDENTIALS_MESSAGE,
    FixedWindow,
    LoginRequest,
    RisingDelay,
)
from services.auth.service_layer import credentials, session_management
from services.auth.service_layer.attempt_limits import (
    LoginLimits,
    LoginPolicy,
    RegisterLimits,
    RegisterPolicy,
)
from services.auth.service_layer.device_tokens import DeviceTokens
from services.auth.service_layer.ports import AuthDependencies
from shared.auth_context import Caller
from shared.errors import (
    AlreadyExists,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

PASSWORD = "glacier violet umbrella 42"
CHEAP = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)
POLICY = LoginPolicy(per_pair=FixedWindow(5, 900), per_address=FixedWindow(20, 900),
                     per_email=RisingDelay(free=5, base_s=1, max_s=300, window_s=900),
                     per_device=RisingDelay(free=5, base_s=1, max_s=300, window_s=900))
DEVICE_TOKENS = DeviceTokens(bytes(range(32)), ttl_s=90 * 86_400)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_deps(params: Argon2Params = CHEAP, clock: Clock | None = None,
              users: FakeUserRepository | None = None) -> AuthDependencies:
    sessions = FakeSessions()
    users = users or FakeUserRepository()
    users.sessions = sessions
    counters = FakeAttemptCounters(clock=clock or Clock())
    limiter = LoginLimits(counters, POLICY)
    registrations = RegisterLimits(counters, RegisterPolicy(FixedWindow(5, 3600),
                                                            FixedWindow(60, 60)))
    return AuthDependencies(users, sessions, sessions, limiter, registrations,
                            CountingHasher(Argon2PasswordHasher(params)), FakeCacheWarmer(),
                            DEVICE_TOKENS)


def login_request(email: str = "alice@example.com", password: str = PASSWORD,
                  address: str = "10.0.0.1", device_token: str = "") -> LoginRequest:
    return LoginRequest(email, password, address, "test-agent", device_token)


async def test_register_then_login_returns_a_working_token() -> None:
    deps = make_deps()
    made = await credentials.register(deps, "Alice@Example.com", PASSWORD, "Alice", "")
    assert deps.users.accounts[made.account_id] == (made.user_id, "EUR")  # type: ignore[attr-defined]
    session = await credentials.login(deps, login_request())
    assert session.user_id == made.user_id
    checked = await session_management.validate_session(deps, session.token)
    assert checked.caller == Caller(made.user_id, session.session_id)


async def test_a_login_asks_for_a_warm_cache_with_its_new_session_only() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    with pytest.raises(Unauthenticated):
        await credentials.login(deps, login_request(password=PASSWORD + "x"))
    assert deps.warmer.tokens == []  # type: ignore[attr-defined]
    session = await credentials.login(deps, login_request())
    assert deps.warmer.tokens == [session.token]  # type: ignore[attr-defined]


async def test_duplicate_email_is_already_exists() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    hashes = deps.hasher.hashes  # type: ignore[attr-defined]
    with pytest.raises(AlreadyExists):
        await credentials.register(deps, "ALICE@example.com", PASSWORD + "x", "Alice 2")
    assert deps.hasher.hashes == hashes  # type: ignore[attr-defined]  # no argon2 for it


async def test_registrations_are_limited_per_address_whatever_their_outcome() -> None:
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "taken@example.com", PASSWORD, "T", "", "10.0.0.9")
    for n in range(3):
        await credentials.register(deps, f"new{n}@example.com", PASSWORD, "N", "", "10.0.0.9")
    with pytest.raises(AlreadyExists):
        await credentials.register(deps, "taken@example.com", PASSWORD, "T", "", "10.0.0.9")
    with pytest.raises(ResourceExhausted) as refused:
        await credentials.register(deps, "more@example.com", PASSWORD, "M", "", "10.0.0.9")
    assert refused.value.retry_after_s == 3600
    await credentials.register(deps, "more@example.com", PASSWORD, "M", "", "10.0.0.10")
    clock.now += 3600
    await credentials.register(deps, "later@example.com", PASSWORD, "L", "", "10.0.0.9")


async def test_register_applies_the_policy_before_hashing() -> None:
    deps = make_deps()
    with pytest.raises(InvalidArgument, match="at least 12"):
        await credentials.register(deps, "bob@example.com", "short", "Bob")
    assert deps.hasher.hashes == 0  # type: ignore[attr-defined]


async def test_unknown_email_and_wrong_password_look_the_same() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    hasher: CountingHasher = deps.hasher  # type: ignore[assignment]
    messages = []
    for request in (login_request(password="wrong password 1"),
                    login_request(email="nobody@example.com")):
        before = hasher.verifications
        with pytest.raises(Unauthenticated) as refused:
            await credentials.login(deps, request)
        assert hasher.verifications == before + 1  # same argon2 work either way
        messages.append(refused.value.message)
    assert messages == [INVALID_CREDENTIALS_MESSAGE, INVALID_CREDENTIALS_MESSAGE]


async def test_five_failures_stop_that_address_for_that_email_until_the_window_ends() -> None:
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    for attempt in range(5):
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(password=f"wrong password {attempt}"))
    clock.now += 60  # past the email's delay: what refuses now is the (email, address) limit
    with pytest.raises(ResourceExhausted) as stopped:
        await credentials.login(deps, login_request())
    assert 60 < stopped.value.retry_after_s <= 900 - 60
    # The owner elsewhere is not locked out by the guesser's address.
    assert (await credentials.login(deps, login_request(address="10.7.7.7"))).token
    clock.now += 900
    assert (await credentials.login(deps, login_request())).token


async def test_failures_of_an_email_from_many_addresses_rise_into_capped_delays() -> None:
    """No lockout a third party can cause: after the free failures each attempt waits a delay
    that doubles up to a cap, and the right password gets in once it has passed."""
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    addresses = (f"10.1.{n // 250}.{n % 250}" for n in range(1000))
    for _ in range(5):  # free
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(password="wrong password",
                                                        address=next(addresses)))
    waits = []
    for _ in range(12):
        with pytest.raises(ResourceExhausted) as refused:
            await credentials.login(deps, login_request(password="wrong password",
                                                        address=next(addresses)))
        waits.append(refused.value.retry_after_s)
        clock.now += refused.value.retry_after_s
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(password="wrong password",
                                                        address=next(addresses)))
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    # The owner, from an address with no failures: refused only until the delay has passed.
    with pytest.raises(ResourceExhausted) as refused:
        await credentials.login(deps, login_request(address="10.200.0.1"))
    assert refused.value.retry_after_s == 300
    clock.now += 300
    assert (await credentials.login(deps, login_request(address="10.200.0.1"))).token
    # A success forgets the email's failures: the next mistake is free again.
    with pytest.raises(Unauthenticated):
        await credentials.login(deps, login_request(password="typo password",
                                                    address="10.200.0.1"))


async def test_the_limit_is_per_address_too() -> None:
    deps = make_deps()
    for n in range(20):
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(email=f"user{n}@example.com"))
    with pytest.raises(ResourceExhausted):
        await credentials.login(deps, login_request(email="fresh@example.com"))
    # Another address is not affected.
    with pytest.raises(Unauthenticated):
        await credentials.login(deps, login_request(email="fresh@example.com", address="10.9.9.9"))


async def test_ipv6_addresses_of_one_64_share_their_limits() -> None:
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    for n in range(5):
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(password="wrong password",
                                                        address=f"2001:db8:5:6::{n + 1:x}"))
    clock.now += 60  # past the email's delay
    with pytest.raises(ResourceExhausted):  # a sixth address of the same /64
        await credentials.login(deps, login_request(address="2001:db8:5:6:ffff::1"))
    assert (await credentials.login(deps, login_request(address="2001:db8:5:7::1"))).token


async def test_successful_logins_do_not_use_up_the_window() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    for _ in range(10):
        await credentials.login(deps, login_request())


async def test_a_database_outage_does_not_use_up_attempts() -> None:
    users = FakeUserRepository()
    deps = make_deps(users=users)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    users.down = True
    for _ in range(10):
        with pytest.raises(Unavailable):
            await credentials.login(deps, login_request())
    users.down = False
    assert await credentials.login(deps, login_request())


async def test_bad_login_input_is_invalid_argument_and_not_counted() -> None:
    deps = make_deps()
    for request in (login_request(email=""), login_request(password=""),
                    login_request(password="p" * 129), login_request(email="e" * 300)):
        with pytest.raises(InvalidArgument):
            await credentials.login(deps, request)
    assert deps.limiter._counters.counters == {}  # type: ignore[attr-defined]


async def test_login_rehashes_when_the_parameters_changed() -> None:
    users = FakeUserRepository()
    old = make_deps(users=users)
    await credentials.register(old, "alice@example.com", PASSWORD, "Alice")
    before = users.users["alice@example.com"].password_hash
    new = make_deps(Argon2Params(time_cost=2, memory_kib=16, parallelism=1), users=users)
    await credentials.login(new, login_request())
    after = users.users["alice@example.com"].password_hash
    assert after != before and "t=2" in after
    await credentials.login(new, login_request())  # the new hash verifies


async def test_change_password_revokes_every_other_session() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    sessions = [await credentials.login(deps, login_request()) for _ in range(3)]
    current = Caller(sessions[0].user_id, sessions[0].session_id)
    new_password = "a brand new passphrase 7"
    revoked = await credentials.change_password(deps, current, PASSWORD, new_password, "10.0.0.1")
    assert revoked == 2
    assert set(deps.sessions.tombstoned) == {s.session_id for s in sessions[1:]}  # type: ignore[attr-defined]
    await session_management.validate_session(deps, sessions[0].token)
    for other in sessions[1:]:
        with pytest.raises(Unauthenticated):
            await session_management.validate_session(deps, other.token)
    with pytest.raises(Unauthenticated):
        await credentials.login(deps, login_request())
    assert await credentials.login(deps, login_request(password=new_password))


async def test_change_password_checks_the_current_one_and_the_policy() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    session = await credentials.login(deps, login_request())
    caller = Caller(session.user_id, session.session_id)
    with pytest.raises(PermissionDenied, match="current_password"):
        await credentials.change_password(deps, caller, "not the password", "a brand new one 77",
                                          "10.0.0.1")
    with pytest.raises(InvalidArgument, match="new_password must be at least 12"):
        await credentials.change_password(deps, caller, PASSWORD, "short", "10.0.0.1")
    with pytest.raises(InvalidArgument, match="differ"):
        await credentials.change_password(deps, caller, PASSWORD, PASSWORD, "10.0.0.1")


async def test_logout_and_list_sessions() -> None:
    deps = make_deps()
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    first = await credentials.login(deps, login_request())
    second = await credentials.login(deps, login_request())
    listed = await session_management.list_sessions(deps, Caller(first.user_id, first.session_id))
    assert {s.session_id for s in listed} == {first.session_id, second.session_id}
    await session_management.logout(deps, Caller(second.user_id, second.session_id))
    with pytest.raises(Unauthenticated):
        await session_management.validate_session(deps, second.token)
    listed = await session_management.list_sessions(deps, Caller(first.user_id, first.session_id))
    assert [s.session_id for s in listed] == [first.session_id]


async def test_a_registration_refused_by_a_full_hashing_pool_costs_no_attempt() -> None:
    new_hashes = BoundedWorkPool("new_password_unit", workers=1, queue=0)
    deps = dataclasses.replace(make_deps(),
                               hasher=Argon2PasswordHasher(CHEAP, new_hashes=new_hashes))
    counters: FakeAttemptCounters = deps.limiter._counters  # type: ignore[attr-defined]
    release = threading.Event()
    try:
        held = asyncio.create_task(new_hashes.run(release.wait))
        while new_hashes.admitted < 1:
            await asyncio.sleep(0)
        with pytest.raises(Unavailable):
            await credentials.register(deps, "busy@example.com", PASSWORD, "B", "", "10.0.0.3")
        assert counters.counters["register-addr:10.0.0.3"].attempts == 0
        release.set()
        await held
        await credentials.register(deps, "busy@example.com", PASSWORD, "B", "", "10.0.0.3")
        assert counters.counters["register-addr:10.0.0.3"].attempts == 1
    finally:
        release.set()
        new_hashes.close()


async def test_the_owners_device_token_skips_the_delay_a_guesser_keeps_renewing() -> None:
    """The guesser fires each time the delay ends; the owner's device is not made to wait, and
    a stolen device token buys only the device's few guesses."""
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    device = (await credentials.login(deps, login_request())).device_token
    assert device
    guessers = (f"10.2.{n // 250}.{n % 250}" for n in range(1000))
    for _ in range(8):  # the free failures, then guesses timed to each end of the delay
        try:
            await credentials.login(deps, login_request(password="wrong password",
                                                        address=next(guessers)))
        except ResourceExhausted as wait:
            clock.now += wait.retry_after_s
            with pytest.raises(Unauthenticated):
                await credentials.login(deps, login_request(password="wrong password",
                                                            address=next(guessers)))
        except Unauthenticated:
            pass
    with pytest.raises(ResourceExhausted):  # without the device token: wait
        await credentials.login(deps, login_request(address="10.3.0.1"))
    session = await credentials.login(deps, login_request(address="10.3.0.1",
                                                          device_token=device))
    assert session.token and session.device_token != device
    # The success forgot the email's failures: a mistake afterwards is not delayed.
    with pytest.raises(Unauthenticated):
        await credentials.login(deps, login_request(password="typo password", address="10.3.0.2"))

    stolen = session.device_token
    for n in range(5):
        with pytest.raises(Unauthenticated):
            await credentials.login(deps, login_request(
                password=f"wrong password {n}", address=next(guessers), device_token=stolen))
    with pytest.raises(ResourceExhausted):
        await credentials.login(deps, login_request(address=next(guessers), device_token=stolen))


async def test_a_device_token_of_another_email_or_expired_is_no_token() -> None:
    clock = Clock()
    deps = make_deps(clock=clock)
    await credentials.register(deps, "alice@example.com", PASSWORD, "Alice")
    now = 1_000_000.0
    theirs = DEVICE_TOKENS.issue("bob@example.com", now)
    assert DEVICE_TOKENS.device_of(theirs, "alice@example.com", now) is None
    assert DEVICE_TOKENS.device_of(theirs, "bob@example.com", now) is not None
    assert DEVICE_TOKENS.device_of(theirs, "bob@example.com", now + 91 * 86_400) is None
    other_key = DeviceTokens(bytes(32), ttl_s=90 * 86_400)
    assert other_key.device_of(theirs, "bob@example.com", now) is None
    edited = theirs[:-3] + ("A" if theirs[-3] != "A" else "B") + theirs[-2:]
    assert DEVICE_TOKENS.device_of(edited, "bob@example.com", now) is None
    assert (await credentials.login(deps, login_request(device_token=theirs))).token


@pytest.mark.parametrize("bad", ["abc\x00def", "line\nbreak", "A" * 121, "not base64!"])
async def test_a_value_that_cannot_be_a_device_token_is_invalid_argument(bad: str) -> None:
    deps = make_deps()
    with pytest.raises(InvalidArgument, match="device_token"):
        await credentials.login(deps, login_request(device_token=bad))
