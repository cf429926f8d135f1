"""The request gate on the real Redis Cluster and PostgreSQL: one Lua call checks the session,
counts the request and returns the read-your-writes floor; PostgreSQL decides whatever Redis
cannot vouch for."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from shared.auth_context import Caller
from shared.config import Settings
from shared.errors import Unauthenticated
from shared.pg_pool import PoolType
from shared.rate_limit import RateLimited
from shared.redis_client import create_redis_cluster, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import Admission, RequestGate, floors_key, user_limit_key
from shared.sessions import REVOKED, SessionEntrySigner, hash_secret, session_key
from tests.conftest import settings_for
from tests.support.account import metric
from tests.support.sessions import TEST_SESSION_SIGNING_KEY, request_gate, session_store

pytestmark = pytest.mark.integration

SIGNER = SessionEntrySigner(TEST_SESSION_SIGNING_KEY)


async def new_user(engine: AsyncEngine, unique: Callable[[str], str]) -> str:
    return await seed.create_user(engine, unique("gate") + "@example.com", "", "G",
                                  password_hash="!")


@pytest.fixture
async def redis(base_settings: Settings) -> RedisCluster:  # type: ignore[misc]
    client = create_redis_cluster(base_settings)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_cached_session_is_admitted_and_slid_in_one_call(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, redis: RedisCluster,
    unique: Callable[[str], str],
) -> None:
    pipeline = create_redis_pipeline(base_settings)
    try:
        user = await new_user(engine, unique)
        session = await session_store(pg_pool, pipeline, ttl_s=900).create(user)
        key = session_key(user, session.session_id)
        await redis.expire(key, 10)
        async with request_gate(base_settings) as gate:
            admitted = await gate.admit(session.token, count=True)
        assert admitted.caller == Caller(user, session.session_id)
        assert admitted.limit is not None and admitted.limit.remaining == 99
        assert await redis.ttl(key) > 800  # slid back to the idle timeout
    finally:
        await pipeline.close()


async def test_refusals_slide_nothing_and_create_no_limit_window(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, redis: RedisCluster,
    unique: Callable[[str], str],
) -> None:
    pipeline = create_redis_pipeline(base_settings)
    try:
        user = await new_user(engine, unique)
        store = session_store(pg_pool, pipeline)
        session, revoked = await store.create(user), await store.create(user)
        await store.revoke(user, [revoked.session_id])
        key = session_key(user, session.session_id)
        await redis.expire(key, 10)
        wrong_secret = session.token[:-1] + ("A" if session.token[-1] != "A" else "B")
        async with request_gate(base_settings) as gate:
            for token in (wrong_secret, revoked.token):
                with pytest.raises(Unauthenticated):
                    await gate.admit(token, count=True)
        assert await redis.ttl(key) <= 10
        assert await redis.exists(user_limit_key(user)) == 0
        assert await redis.get(session_key(user, revoked.session_id)) == REVOKED
    finally:
        await pipeline.close()


async def test_a_stale_or_missing_entry_is_confirmed_by_postgres_and_rewritten(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, redis: RedisCluster,
    unique: Callable[[str], str],
) -> None:
    user = await new_user(engine, unique)
    session = await session_store(pg_pool, None).create(user)  # PostgreSQL only
    key = session_key(user, session.session_id)
    secret_hash = hash_secret(session.token.split(".")[2])
    async with request_gate(base_settings) as gate:
        assert (await gate.admit(session.token, count=False)).caller.user_id == user
        entry = SIGNER.decode(await redis.get(key) or b"")
        assert entry is not None and entry.secret_hash == secret_hash

        # An entry PostgreSQL confirmed two minutes ago is evidence too old to trust.
        old = int(time.time()) - 120
        await redis.set(key, SIGNER.encode(secret_hash, old, entry.created_at), ex=900)
        assert (await gate.admit(session.token, count=False)).caller.user_id == user
        refreshed = SIGNER.decode(await redis.get(key) or b"")
        assert refreshed is not None and refreshed.checked_at > old + 100


async def test_a_forged_entry_does_not_make_a_session(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, redis: RedisCluster,
    unique: Callable[[str], str],
) -> None:
    """Someone who can write to Redis, without the signing key, writes an entry for a session
    id of their choosing: PostgreSQL has no such session, so the gate refuses it."""
    user = await new_user(engine, unique)
    session = await session_store(pg_pool, None).create(user)
    forged_session = "00000000-0000-4000-8000-000000000001"
    secret = "F" * 43
    now = int(time.time())
    forger = SessionEntrySigner("the-forgers-own-key-" + "x" * 32)
    await redis.set(session_key(user, forged_session),
                    forger.encode(hash_secret(secret), now, now), ex=900)
    async with request_gate(base_settings) as gate:
        with pytest.raises(Unauthenticated):
            await gate.admit(f"{user}.{forged_session}.{secret}", count=True)
        # The genuine session's entry replaced by a forged one (another secret): refused too.
        await redis.set(session_key(user, session.session_id),
                        forger.encode(hash_secret(secret), now, now), ex=900)
        with pytest.raises(Unauthenticated):
            await gate.admit(f"{user}.{session.session_id}.{secret}", count=True)
        assert (await gate.admit(session.token, count=False)).caller.user_id == user


async def test_a_session_ends_at_its_absolute_lifetime(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    pipeline = create_redis_pipeline(base_settings)
    try:
        user = await new_user(engine, unique)
        session = await session_store(pg_pool, pipeline).create(user)
        async with engine.begin() as conn:
            await conn.execute(text(
                "UPDATE sessions SET created_at = now() - interval '13 hours' WHERE id = :s"
            ), {"s": session.session_id})
        settings = dataclasses.replace(base_settings, session_absolute_ttl_s=12 * 3600)
        async with request_gate(settings) as gate:
            assert (await gate.admit(session.token, count=False)).caller.user_id == user
            # The entry says "created now"; PostgreSQL knows better once it is re-confirmed.
            short = dataclasses.replace(settings, session_absolute_ttl_s=1)
            await asyncio.sleep(2.1)
            async with request_gate(short) as strict:
                with pytest.raises(Unauthenticated):
                    await strict.admit(session.token, count=False)
    finally:
        await pipeline.close()


async def test_exactly_the_limit_is_admitted_across_replicas(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    pipeline = create_redis_pipeline(base_settings)
    try:
        user = await new_user(engine, unique)
        session = await session_store(pg_pool, pipeline).create(user)
        # A 1 s Redis deadline: a CPU-starved moment must not hand the burst to the per-replica
        # fallback (what test_without_redis_postgres_decides_and_limits_stay_local is for).
        patient = dataclasses.replace(base_settings, redis_timeout_ms=1000)
        async with request_gate(patient) as one, request_gate(patient) as two:
            # Both replicas know the cluster's layout before the burst, as a serving replica does
            # (its first call waits for CLUSTER SLOTS; under CI load that can pass the deadline).
            for gate in (one, two):
                await gate.admit(session.token, count=False)

            async def attempt(i: int) -> bool:
                try:
                    await (one if i % 2 else two).admit(session.token, count=True)
                except RateLimited as limited:
                    assert limited.decision.retry_after_s >= 1
                    return False
                return True

            admitted = await asyncio.gather(*(attempt(i) for i in range(150)))
            assert sum(admitted) == 100
            # Uncounted calls (internal callers) are never limited.
            assert (await one.admit(session.token, count=False)).limit is None
    finally:
        await pipeline.close()


async def test_floors_cover_every_session_of_the_writer(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, redis: RedisCluster,
    unique: Callable[[str], str],
) -> None:
    pipeline = create_redis_pipeline(base_settings)
    try:
        user = await new_user(engine, unique)
        store = session_store(pg_pool, pipeline)
        phone, laptop = await store.create(user), await store.create(user)
        async with request_gate(base_settings) as gate:
            await gate.remember_writes(user, {"acc-a": 7, "acc-b": 3})
            await gate.remember_writes(user, {"acc-a": 5})  # an older reply cannot lower it
            assert (await gate.admit(phone.token, count=True, account_id="acc-a")).floor == 7
            assert (await gate.admit(laptop.token, count=True, account_id="acc-b")).floor == 3
            assert (await gate.admit(laptop.token, count=True, account_id="other")).floor == 0
        assert 0 < await redis.pttl(floors_key(user)) <= base_settings.read_your_writes_ttl_s * 1000
    finally:
        await pipeline.close()


async def test_without_redis_postgres_decides_and_limits_stay_local(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    pg_pool: PoolType,
    unique: Callable[[str], str],
) -> None:
    settings = settings_for(postgres, private_redis_cluster, rate_limit_per_minute=3)
    user = await new_user(engine, unique)
    store = session_store(pg_pool, None)
    session, revoked = await store.create(user), await store.create(user)
    await store.revoke(user, [revoked.session_id])
    async with request_gate(settings) as gate:
        await asyncio.to_thread(private_redis_cluster.stop_all_nodes)
        try:
            started = time.monotonic()
            for _ in range(3):
                assert (await gate.admit(session.token, count=True)).caller.user_id == user
            with pytest.raises(RateLimited):
                await gate.admit(session.token, count=True)  # this replica's own window
            with pytest.raises(Unauthenticated):
                await gate.admit(revoked.token, count=True)
            assert time.monotonic() - started < 2.0
        finally:
            await asyncio.to_thread(private_redis_cluster.start_all_nodes)


async def test_an_address_past_its_failed_checks_is_refused_before_any_lookup(
    base_settings: Settings, engine: AsyncEngine, pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    user = await new_user(engine, unique)
    session = await session_store(pg_pool, None).create(user)
    guess = f"{user}.{session.session_id}.{'G' * 43}"
    settings = dataclasses.replace(base_settings, failed_session_checks_per_minute=3)
    async with request_gate(settings) as gate:
        for _ in range(3):
            with pytest.raises(Unauthenticated):
                await gate.admit(guess, count=True, address=lambda: "198.51.100.7")
        # The quota is spent: even the right token from that address waits for the window.
        with pytest.raises(RateLimited) as refused:
            await gate.admit(session.token, count=True, address=lambda: "198.51.100.7")
        assert refused.value.decision.scope == "failed_checks"
        assert refused.value.retry_after_s >= 1
        other = await gate.admit(session.token, count=True, address=lambda: "198.51.100.8")
        assert other.caller.user_id == user
async def test_floors_are_remembered_even_while_the_breaker_is_open(
    base_settings: Settings, engine: AsyncEngine, redis: RedisCluster, pg_pool: PoolType,
    unique: Callable[[str], str],
) -> None:
    """Failures on other nodes open the process's breaker; a transfer's floor must still reach
    the user's node, or another session would read the cache below the transfer."""
    from shared.redis_client import create_redis_breaker
    from shared.request_gate import build_request_gate

    pipeline = create_redis_pipeline(base_settings)
    breaker = create_redis_breaker(base_settings, exported=False)
    try:
        gate = build_request_gate(base_settings, pipeline, pg_pool, breaker)
        for _ in range(base_settings.circuit_failure_threshold):
            breaker.record_failure()
        assert not breaker.allow_request()
        user = await new_user(engine, unique)
        await gate.remember_writes(user, {"acc-1": 42})
        assert await redis.hget(floors_key(user), "acc-1") == b"42"
    finally:
        await pipeline.close()


async def admitted_by_redis(gate: RequestGate, token: str) -> Admission:
    """An admission Redis answered (not PostgreSQL's fallback), once Redis answers again."""
    deadline = time.monotonic() + 15
    while True:
        fallbacks = metric("bank_session_checks_total", outcome="redis_down")
        admission = await gate.admit(token, count=False, account_id="acc-1")
        if metric("bank_session_checks_total", outcome="redis_down") == fallbacks:
            return admission
        assert time.monotonic() < deadline, "Redis did not answer again"
        await asyncio.sleep(0.1)


async def user_with_floors_on(engine: AsyncEngine, pool: PoolType, unique: Callable[[str], str],
                              cluster: LocalRedisCluster, pipeline: ClusterPipeline,
                              master: int, on: bool) -> str:
    """A session token of a new user whose floors are (or are not) on `master`."""
    while True:
        user = await new_user(engine, unique)
        if (cluster.master_for_key(floors_key(user)) == master) == on:
            return (await session_store(pool, pipeline).create(user)).token


async def test_after_a_redis_topology_event_floors_are_unknown_for_a_while(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    pg_pool: PoolType, unique: Callable[[str], str],
) -> None:
    """A primary that stopped answering for a moment failed the floor writes sent to it: the
    floors of its users are unknown for a while after it answers again (the account service
    reads PostgreSQL for them), the others' are not. A primary killed and started again may
    have lost floors, and the cluster refused every write until it was back: everyone's floors
    are unknown for a while."""
    cluster = private_redis_cluster
    settings = settings_for(postgres, cluster)
    pipeline = create_redis_pipeline(settings)
    try:
        async with request_gate(settings) as gate:
            master = cluster.masters()[0]
            def user(on: bool) -> Awaitable[str]:
                return user_with_floors_on(engine, pg_pool, unique, cluster, pipeline, master, on)

            there, elsewhere = await user(True), await user(False)
            assert not (await gate.admit(there, count=False)).caller.floors_unknown

            await asyncio.to_thread(cluster.pause_node, master)
            try:
                await gate.admit(there, count=False)  # times out: the node is a suspect
            finally:
                await asyncio.to_thread(cluster.resume_node, master)
            assert (await admitted_by_redis(gate, there)).caller.floors_unknown
            assert not (await admitted_by_redis(gate, elsewhere)).caller.floors_unknown

            await asyncio.to_thread(cluster.kill_node, master)
            await asyncio.to_thread(cluster.start_node, master)
            await asyncio.to_thread(cluster.wait_healthy, 30)
            assert (await admitted_by_redis(gate, there)).caller.floors_unknown
            assert (await admitted_by_redis(gate, elsewhere)).caller.floors_unknown
    finally:
        await pipeline.close()
