"""Brute-force and registration limits on the real parts: the counters in PostgreSQL
(adapters/attempt_counters.py) hold through a FLUSHALL of every Redis master and through a Redis
outage, parallel attempts cannot outrun them, registrations are limited per IPv6 /64, and the
hashing pools keep logins apart from a registration flood."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from bank.v1 import auth_pb2, auth_pb2_grpc
from psycopg import AsyncConnection

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.auth.adapters.attempt_counters import PostgresAttemptCounters
from services.auth.bootstrap import build_auth_app
from services.auth.domain import FixedWindow, RisingDelay
from services.auth.service_layer.attempt_limits import email_counter_key
from shared.config import Settings
from shared.pg_pool import PoolType
from tests.conftest import settings_for
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.rpc import rpc_error

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    app = build_auth_app(settings, port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await app.stop()


def login(auth: auth_pb2_grpc.AuthServiceStub, email: str, password: str,
          address: str) -> grpc.aio.UnaryUnaryCall:
    return auth.Login(auth_pb2.LoginRequest(email=email, password=password),
                      metadata=(("x-forwarded-for", address),))


async def attempts(settings: Settings, counter_key: str) -> int | None:
    async with await AsyncConnection.connect(settings.database_url) as conn:
        row = await (await conn.execute(
            "SELECT attempts FROM login_attempt_windows WHERE counter_key = %s", (counter_key,)
        )).fetchone()
    return None if row is None else int(row[0])


async def test_parallel_attempts_cannot_outrun_a_counter(
    pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    counters = PostgresAttemptCounters(pg_pool)
    key = unique("parallel")
    rule = FixedWindow(limit=3, window_s=60)
    results = await asyncio.gather(*(counters.take([(key, rule)]) for _ in range(12)))
    assert sum(r is None for r in results) == 3  # granted: exactly the limit
    assert all(0 < r <= 60 for r in results if r is not None)


async def test_a_take_that_waited_on_the_lock_judges_by_the_clock_after_the_wait(
    base_settings: Settings, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    """The take's transaction begins, then queues on the counter's row lock while another
    attempt fills the window. Judged by now() (the transaction's start) the window would look
    longer than its 60 s; judged by the clock after the wait it is at most 60 s."""
    counters = PostgresAttemptCounters(pg_pool)
    key = unique("queued")
    rule = FixedWindow(limit=1, window_s=60)
    assert await counters.take([(key, FixedWindow(limit=5, window_s=60))]) is None  # row exists
    async with await AsyncConnection.connect(base_settings.database_url) as holder:
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM login_attempt_windows WHERE counter_key = %s FOR UPDATE", (key,))
            queued = asyncio.create_task(counters.take([(key, rule)]))
            await asyncio.sleep(1.5)  # the take has begun and waits on the row lock
            assert not queued.done()
            await holder.execute(
                "UPDATE login_attempt_windows SET attempts = 1,"
                " window_ends_at = clock_timestamp() + interval '60 seconds'"
                " WHERE counter_key = %s", (key,))
        wait = await queued
    assert wait is not None
    assert 0 < wait <= 60


async def test_a_refused_attempt_counts_nowhere_and_clear_forgets(
    base_settings: Settings, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    counters = PostgresAttemptCounters(pg_pool)
    full, other = unique("full"), unique("other")
    assert await counters.take([(full, FixedWindow(1, 60))]) is None
    delay = RisingDelay(free=5, base_s=1, max_s=10, window_s=60)
    assert await counters.take([(full, FixedWindow(1, 60)), (other, delay)]) is not None
    assert await attempts(base_settings, other) == 0  # refused by `full`: nothing counted
    assert await counters.take([(other, delay)]) is None
    await counters.give_back([full, other], clear=[other])
    assert await attempts(base_settings, full) == 0
    assert await attempts(base_settings, other) == 0
    assert await counters.take([(full, FixedWindow(1, 60))]) is None  # its slot came back


async def test_flushing_every_redis_master_does_not_reset_the_limits(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster,
    unique: Callable[[str], str],
) -> None:
    """allkeys-lru may evict any key: the failures are PostgreSQL's, Redis holds none of them."""
    settings = auth_settings(settings_for(postgres, private_redis_cluster),
                             login_email_free_failures=3, login_delay_base_s=600,
                             login_delay_max_s=600)
    async with serve(settings) as auth:
        email = unique("flush") + "@example.com"
        await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="F"))
        for n in range(3):
            err = await rpc_error(login(auth, email, f"wrong guess {n}", random_address()))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        before = await rpc_error(login(auth, email, PASSWORD, random_address()))
        assert before.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        def flush_masters() -> None:
            for port in private_redis_cluster.ports:
                client = private_redis_cluster.client(port)
                try:
                    if client.info("replication")["role"] == "master":
                        client.flushall()
                finally:
                    client.close()

        await asyncio.to_thread(flush_masters)
        after = await rpc_error(login(auth, email, PASSWORD, random_address()))
        assert after.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(dict(after.trailing_metadata() or ())["retry-after"]) > 500
        assert await attempts(settings, email_counter_key(email)) == 3


async def test_login_and_its_limits_work_while_redis_is_down(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster,
    unique: Callable[[str], str],
) -> None:
    settings = auth_settings(settings_for(postgres, private_redis_cluster),
                             login_max_failures=3, login_delay_base_s=600, login_delay_max_s=600)
    async with serve(settings) as auth:
        email = unique("outage") + "@example.com"
        await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="O"))
        await asyncio.to_thread(private_redis_cluster.stop_all_nodes)
        guesser = random_address()
        assert (await login(auth, email, PASSWORD, guesser)).token  # Redis down, login up
        assert (await login(auth, email, PASSWORD, guesser)).token  # a success does not count
        for n in range(3):
            err = await rpc_error(login(auth, email, f"wrong guess {n}", guesser))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        stopped = await rpc_error(login(auth, email, PASSWORD, guesser))
        assert stopped.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry-after" in dict(stopped.trailing_metadata() or ())


async def test_registrations_are_limited_per_ipv6_64_and_a_taken_email_counts(
    base_settings: Settings, unique: Callable[[str], str],
) -> None:
    settings = auth_settings(base_settings, register_per_address_per_hour=3)
    prefix = f"2001:db8:{abs(hash(unique('net'))) % 0xffff:x}:1"
    async with serve(settings) as auth:
        email = unique("reg") + "@example.com"

        def register(address: str, email: str) -> grpc.aio.UnaryUnaryCall:
            return auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD,
                                                          name="R"),
                                 metadata=(("x-forwarded-for", address),))

        await register(f"{prefix}::1", email)
        taken = await rpc_error(register(f"{prefix}::2", email))
        assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
        await register(f"{prefix}:ffff::3", unique("reg") + "@example.com")
        # Three attempts from this /64 in the hour, whatever their outcome: the fourth waits.
        refused = await rpc_error(register(f"{prefix}:abcd::4", unique("reg") + "@example.com"))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many registrations" in (refused.details() or "")
        assert int(dict(refused.trailing_metadata() or ())["retry-after"]) > 3000
        await register(f"{prefix[:-1]}2::1", unique("reg") + "@example.com")  # another /64


async def test_a_registration_flood_neither_delays_nor_refuses_a_login(
    base_settings: Settings, unique: Callable[[str], str],
) -> None:
    """Real argon2 (64 MiB, 8 passes). The new-password pool holds one hash and five in its
    queue: the rest of the flood is refused UNAVAILABLE, and the login, in its own pool, is
    answered while admitted registrations still wait for the registrations' one thread. (That a
    full pool refuses without waiting is shown deterministically in
    tests/unit/test_auth_login_limits.py: here the hashes compete with PostgreSQL and the event
    loop for the two cores, so no ordering between refusals and hashes is asserted.)"""
    settings = dataclasses.replace(
        auth_settings(base_settings), argon2_time_cost=8, argon2_memory_kib=65536,
        argon2_parallelism=1, argon2_new_password_concurrent=1, argon2_new_password_queue=5,
        argon2_max_concurrent=1, argon2_login_queue=4)
    async with serve(settings) as auth:
        email = unique("busy") + "@example.com"
        await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="B"))
        address = random_address()
        assert (await login(auth, email, PASSWORD, address)).token  # warm: the dummy hash
        finished: list[str] = []

        async def register(n: int) -> None:
            try:
                await auth.Register(auth_pb2.RegisterRequest(
                    email=unique(f"flood{n}") + "@example.com", password=PASSWORD, name="F"))
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                assert "busy" in (err.details() or "")
                finished.append("refused")
            else:
                finished.append("registered")

        async def log_in() -> None:
            assert (await login(auth, email, PASSWORD, address)).token
            finished.append("login")

        flood = [asyncio.create_task(register(n)) for n in range(12)]
        await asyncio.sleep(0)  # the flood is sent first
        await asyncio.gather(log_in(), *flood)
        assert finished.count("registered") >= 1 and finished.count("refused") >= 1
        assert finished.count("registered") + finished.count("refused") == 12
        # The login did not wait for the registrations' pool to drain.
        last_registered = max(i for i, what in enumerate(finished) if what == "registered")
        assert finished.index("login") < last_registered


async def test_the_request_gate_counts_failed_checks_per_ipv6_64(
    base_settings: Settings, unique: Callable[[str], str],
) -> None:
    """The interceptor hands the gate the client's group (shared/call_metadata.py): bad tokens
    from three addresses of one /64 spend that /64's quota of failed session checks."""
    settings = auth_settings(base_settings, failed_session_checks_per_minute=3)
    net = f"2001:db8:{abs(hash(unique('gate'))) % 0xffff:x}"
    async with serve(settings) as auth:
        email = unique("gate") + "@example.com"
        await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="G"))
        session = await login(auth, email, PASSWORD, random_address())
        forged = f"{session.user_id}.{session.session_id}.{'G' * 43}"

        def list_sessions(token: str, address: str) -> grpc.aio.UnaryUnaryCall:
            return auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=(
                ("authorization", f"Bearer {token}"), ("x-forwarded-for", address)))

        for n in range(3):
            err = await rpc_error(list_sessions(forged, f"{net}:7::{n + 1}"))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = await rpc_error(list_sessions(session.token, f"{net}:7:ffff::1"))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await list_sessions(session.token, f"{net}:8::1")).sessions  # another /64
