"""Sessions and logins when Redis fails: flushed, down, failing over in the middle of a
revocation, a lost tombstone. The reader is the request gate every service runs. Each test has
its own Redis Cluster (it breaks it); PostgreSQL is the shared one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import grpc
import pytest
import pytest_asyncio
from bank.v1 import auth_pb2, auth_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.auth.bootstrap import AuthApp, build_auth_app
from services.auth.domain import NewSession
from shared.auth_context import Caller
from shared.errors import Unauthenticated
from shared.pg_pool import PoolType
from shared.redis_client import create_redis_cluster, create_redis_pipeline
from shared.request_gate import RequestGate
from shared.sessions import REVOKED, SessionEntrySigner, hash_secret, session_key
from tests.conftest import settings_for
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.rpc import rpc_error
from tests.support.sessions import TEST_SESSION_SIGNING_KEY, request_gate, session_store

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def auth_on_private_redis(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster
) -> AsyncIterator[AuthApp]:
    app = build_auth_app(auth_settings(settings_for(postgres, private_redis_cluster)), port=0)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def new_user(engine: AsyncEngine, unique: Callable[[str], str]) -> str:
    return await seed.create_user(engine, unique("faults") + "@example.com", "", "F",
                                  password_hash="!")


async def assert_refused(gate: RequestGate, token: str) -> None:
    with pytest.raises(Unauthenticated):
        await gate.authenticate(token)


def secret_of(session: NewSession) -> str:
    return session.token.split(".")[2]


async def cached(app: AuthApp, key: str) -> bytes | None:
    return cast(bytes | None, await app.redis_pipeline.execute(key, "GET", key))


async def test_flushed_redis_keeps_sessions_and_revocations(
    auth_on_private_redis: AuthApp, private_redis_cluster: LocalRedisCluster,
    engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    app = auth_on_private_redis
    store, gate = app.sessions, app.gate
    user = await new_user(engine, unique)
    alive, revoked = await store.create(user), await store.create(user)
    await store.revoke(user, [revoked.session_id])

    await asyncio.to_thread(private_redis_cluster.flushall)
    assert await cached(app, session_key(user, alive.session_id)) is None

    assert await gate.authenticate(alive.token) == Caller(user, alive.session_id)
    await assert_refused(gate, revoked.token)
    # The confirmed session is back in Redis, signed; the refused one left nothing behind.
    entry = SessionEntrySigner(TEST_SESSION_SIGNING_KEY).decode(
        await cached(app, session_key(user, alive.session_id)) or b"")
    assert entry is not None and entry.secret_hash == hash_secret(secret_of(alive))
    assert await cached(app, session_key(user, revoked.session_id)) is None


async def test_redis_down_sessions_validate_through_postgres_and_revocations_hold(
    auth_on_private_redis: AuthApp, private_redis_cluster: LocalRedisCluster,
    engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    app = auth_on_private_redis
    store = app.sessions
    email = unique("down") + "@example.com"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="D"))
        login = auth_pb2.LoginRequest(email=email, password=PASSWORD)
        address = (("x-forwarded-for", random_address()),)
        kept = await auth.Login(login, metadata=address)
        dropped = await auth.Login(login, metadata=address)

        await asyncio.to_thread(private_redis_cluster.stop_all_nodes)
        try:
            started = time.monotonic()
            checked = await auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=kept.token))
            assert checked.session_id == kept.session_id
            assert time.monotonic() - started < 2.0, "the PostgreSQL fallback must be quick"

            await auth.Logout(auth_pb2.LogoutRequest(),
                              metadata=(("authorization", f"Bearer {dropped.token}"),))
            err = await rpc_error(auth.ValidateSession(
                auth_pb2.ValidateSessionRequest(token=dropped.token)))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert store.pending_tombstones == 1  # kept for when Redis is back

            # Logins work, slower: the brute-force limits are counted in PostgreSQL.
            assert (await auth.Login(login, metadata=address)).token
        finally:
            await asyncio.to_thread(private_redis_cluster.start_all_nodes)

        deadline = time.monotonic() + 10
        while store.pending_tombstones and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert store.pending_tombstones == 0
        assert (await auth.ValidateSession(
            auth_pb2.ValidateSessionRequest(token=kept.token))).session_id == kept.session_id
        err = await rpc_error(auth.ValidateSession(
            auth_pb2.ValidateSessionRequest(token=dropped.token)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await auth.Login(login, metadata=address)).token


async def test_a_lost_tombstone_cannot_keep_a_revoked_session_alive(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster,
    engine: AsyncEngine, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    """The entry survives while the tombstone is lost (the revoker crashed while Redis was
    unreachable): re-confirmation against PostgreSQL ends it within the recheck interval."""
    settings = settings_for(postgres, private_redis_cluster, session_ttl_s=3)  # recheck: 1 s
    redis = create_redis_cluster(settings)
    pipeline = create_redis_pipeline(settings)
    store = session_store(pg_pool, pipeline, ttl_s=3)
    signer = SessionEntrySigner(TEST_SESSION_SIGNING_KEY)
    try:
        async with request_gate(settings) as gate:
            user = await new_user(engine, unique)
            stale, fresh = await store.create(user), await store.create(user)
            entries = {s.session_id: await redis.get(session_key(user, s.session_id))
                       for s in (stale, fresh)}
            # Revoke in PostgreSQL only (as if every tombstone write had failed), then put the
            # valid entries back, one already old enough to be re-confirmed.
            await session_store(pg_pool, None, ttl_s=3).revoke(
                user, [stale.session_id, fresh.session_id])
            created = int(time.time())
            await redis.set(session_key(user, stale.session_id),
                            signer.encode(hash_secret(secret_of(stale)), created - 5, created),
                            ex=3)
            await redis.set(session_key(user, fresh.session_id),
                            entries[fresh.session_id] or b"", ex=3)

            await assert_refused(gate, stale.token)

            accepted_until = time.monotonic()
            while time.monotonic() - accepted_until < 3:
                try:
                    await gate.authenticate(fresh.token)
                except Unauthenticated:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("a revoked session outlived its re-confirmation interval")
    finally:
        await store.aclose()
        await pipeline.close()
        await redis.aclose()


async def test_revocation_during_a_failover_takes_effect_when_the_slot_is_back(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster,
    engine: AsyncEngine, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    """The master holding the session dies before the tombstone is written; its replica (which
    has the valid entry) takes over. The revoker's retry writes the tombstone on the new master:
    the session is refused within a second of the slot answering again."""
    settings = settings_for(postgres, private_redis_cluster)
    revoker_redis, reader_redis = create_redis_pipeline(settings), create_redis_cluster(settings)
    revoker = session_store(pg_pool, revoker_redis)
    try:
        async with request_gate(settings) as reader:
            user = await new_user(engine, unique)
            session: NewSession = await revoker.create(user)
            key = session_key(user, session.session_id)
            master = await asyncio.to_thread(private_redis_cluster.master_for_key, key)
            with private_redis_cluster.client(master) as direct:
                assert await asyncio.to_thread(direct.execute_command, "WAIT", 1, 2000) == 1
            assert await reader.authenticate(session.token) == Caller(user, session.session_id)

            await asyncio.to_thread(private_redis_cluster.kill_node, master)
            await revoker.revoke(user, [session.session_id])
            assert revoker.pending_tombstones == 1
            await assert_refused(reader, session.token)  # the slot is down: PostgreSQL answers

            await asyncio.to_thread(private_redis_cluster.wait_healthy, 30)
            back_at = time.monotonic()
            while revoker.pending_tombstones and time.monotonic() - back_at < 5:
                await asyncio.sleep(0.05)
            assert revoker.pending_tombstones == 0
            assert time.monotonic() - back_at < 1.0, "tombstone written late after the failover"
            await assert_refused(reader, session.token)
            assert await reader_redis.get(key) == REVOKED
    finally:
        await revoker.aclose()
        await revoker_redis.close()
        await reader_redis.aclose()
