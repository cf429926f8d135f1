"""The test harness: its own PostgreSQL and six-node Redis Cluster on free ports, started once
per session in a temporary folder and torn down even when tests fail. Tests that break servers
(stop PostgreSQL, kill Redis nodes) ask for the private_* fixtures and get their own."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from shared.config import Settings
from shared.db import create_engine
from shared.migrate import upgrade_to_head
from shared.pg_pool import PoolType, create_pool
from shared.redis_client import create_redis_cluster
from tests.support import db_roles, redis_users
from tests.support.sessions import TEST_SESSION_SIGNING_KEY


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets its own temporary root, outside pytest's shared /tmp/pytest-of-<user>.
    As root, PostgreSQL runs as the postgres user, which needs o+x on every ancestor of its data
    directory; any other pytest run starting on the machine chmods /tmp/pytest-of-root back to
    0700, and this run's PostgreSQL then loses its own files mid-test (it hangs or panics)."""
    # `timeout`, CI runners and editors stop a run with SIGTERM: make it an interrupt, so that
    # the session fixtures' finalizers still stop the servers they started.
    signal.signal(signal.SIGTERM, _interrupt)
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="cachebank-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_postgres(folder: Path) -> LocalPostgres:
    pg = LocalPostgres(folder, durable=False)
    pg.start()
    try:
        upgrade_to_head(pg.owner_dsn)  # the migrator, as in every deployment
    except BaseException:
        pg.stop()
        raise
    # The services under test connect as their own logins (tests/support/db_roles.py).
    db_roles.register(pg)
    return pg


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    pg = _start_postgres(tmp_path_factory.mktemp("pg"))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[LocalPostgres]:
    pg = _start_postgres(tmp_path / "pg")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path / "redis", node_timeout_ms=1000)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# The services' default targets are `make run`'s fixed ports, where another stack may be
# listening: tests point them at a port nothing listens on unless they wire services together.
NOWHERE = "ipv4:127.0.0.1:1"


def settings_for(pg: LocalPostgres, cluster: LocalRedisCluster, **overrides: Any) -> Settings:
    """The harness' settings. The database URL is the superuser's, for the tests' own seeding and
    inspection; a service built from them connects as its own login when the test goes through
    tests/support/db_roles.as_service (the support helpers and `make_settings(service_name=...)`
    do). Redis likewise: the admin user for the tests' own looks, the service's own user
    through the same helper (tests/support/redis_users.py)."""
    redis_users.register(cluster)
    targets = {"account_target": NOWHERE, "transfer_target": NOWHERE, "auth_target": NOWHERE}
    return db_roles.as_service(Settings(
        database_url=pg.dsn,
        redis_nodes=cluster.startup_nodes_csv,
        log_json=False,
        session_signing_key=TEST_SESSION_SIGNING_KEY,
        **{**targets, **cluster.user_settings("admin"), **overrides},
    ))


@pytest.fixture(scope="session")
def base_settings(postgres: LocalPostgres, redis_cluster: LocalRedisCluster) -> Settings:
    return settings_for(postgres, redis_cluster)


@pytest.fixture
def make_settings(base_settings: Settings) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return db_roles.as_service(dataclasses.replace(base_settings, **overrides))

    return make


@pytest.fixture(scope="session")
async def engine(base_settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(base_settings)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture(scope="session")
async def pg_pool(base_settings: Settings) -> AsyncIterator[PoolType]:
    """The services' kind of pool (psycopg, autocommit), for tests that build their adapters."""
    pool = create_pool(base_settings, size=4)
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def redis_admin(base_settings: Settings) -> AsyncIterator[RedisCluster]:
    """A direct look into the harness's cluster as the admin user (the services' own users
    hold only what their jobs need)."""
    client = create_redis_cluster(dataclasses.replace(base_settings, redis_timeout_ms=2000))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names per test, so tests share servers without cleaning up after each other."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make
