"""The helpers the containers run besides the services, against real servers: the init
containers' wait for the migrated schema, the compose health check, and the "liveness" health
name the Kubernetes liveness probes ask for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.postgres import LocalPostgres
from shared.config import Settings
from shared.grpc_server import LIVENESS_SERVICE, build_grpc_service
from shared.migrate import upgrade_to_head
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.integration

HELPERS = ROOT / "deploy" / "docker"


def helper(script: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}", **(env or {})}
    return subprocess.run([sys.executable, str(HELPERS / script), *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_wait_for_schema_waits_for_the_migration(postgres: LocalPostgres,
                                                 unique: Callable[[str], str]) -> None:
    database = unique("schema").replace("-", "_")
    with psycopg.connect(postgres.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        url = postgres.dsn_for(database)
        env = {"BANK_DATABASE_URL": url}
        before = helper("wait_for_schema.py", "--timeout", "1", "--poll", "0.2", env=env)
        assert before.returncode == 1, before.stdout + before.stderr
        assert "waiting for" in before.stdout
        upgrade_to_head(url)
        after = helper("wait_for_schema.py", "--timeout", "10", env=env)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "schema at head" in after.stdout
    finally:
        with psycopg.connect(postgres.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def test_a_previous_release_starts_after_the_next_one_migrated(
        postgres: LocalPostgres, unique: Callable[[str], str]) -> None:
    """The schema one revision past this release's head (the next release's Job ran first):
    this release's pods still start; a revision older than the head still waits."""
    database = unique("schema").replace("-", "_")
    with psycopg.connect(postgres.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        url = postgres.dsn_for(database)
        upgrade_to_head(url)
        with psycopg.connect(url, autocommit=True) as conn:
            head = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            assert head is not None
            newer = f"{int(head[0]) + 1:04d}"
            conn.execute("UPDATE alembic_version SET version_num = %s", (newer,))
        env = {"BANK_DATABASE_URL": url}
        after = helper("wait_for_schema.py", "--timeout", "5", env=env)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "newer than this release's head" in after.stdout
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0001'")
        before = helper("wait_for_schema.py", "--timeout", "0.5", "--poll", "0.2", env=env)
        assert before.returncode == 1 and "waiting for" in before.stdout
    finally:
        with psycopg.connect(postgres.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def test_wait_for_schema_gives_up_when_the_database_is_unreachable() -> None:
    env = {"BANK_DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none"}
    result = helper("wait_for_schema.py", "--timeout", "0.5", "--poll", "0.2", env=env)
    assert result.returncode == 1
    assert "database not reachable yet" in result.stdout


async def test_liveness_stays_serving_while_readiness_fails() -> None:
    settings = Settings(database_url="postgresql://unused", redis_nodes="127.0.0.1:1")

    async def not_ready() -> bool:
        return False

    service = build_grpc_service(settings, register=lambda _server: [],
                                 readiness_checks=[not_ready], gate=None, port=0)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            ready = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            alive = await stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE),
                                     timeout=5)
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert alive.status == health_pb2.HealthCheckResponse.SERVING
        # The compose health check reads the same health service (in a thread: the server
        # answers on this event loop).
        target = f"127.0.0.1:{service.port}"
        probe = await asyncio.to_thread(helper, "healthcheck.py", "grpc", target)
        assert probe.returncode == 1 and "NOT_SERVING" in probe.stderr
        probe = await asyncio.to_thread(helper, "healthcheck.py", "grpc", target,
                                        LIVENESS_SERVICE)
        assert probe.returncode == 0, probe.stderr
    finally:
        await service.stop(0)


def test_healthcheck_fails_on_a_closed_port() -> None:
    assert helper("healthcheck.py", "http", "http://127.0.0.1:1/readyz").returncode == 1
    assert helper("healthcheck.py", "grpc", "127.0.0.1:1").returncode == 1
    assert helper("healthcheck.py", "bogus").returncode == 2
