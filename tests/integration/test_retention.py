"""The retention jobs against PostgreSQL: they delete exactly the rows past their retention
(confirmed outbox rows, stored rejections, ended sessions) and keep everything else; and both
jobs run as the processes the deployments start (`--once`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.auth.bootstrap import build_retention_job as auth_retention
from services.transfer.bootstrap import build_retention_job as transfer_retention
from shared.config import Settings
from shared.retention import run_pass
from tests.support.db_roles import as_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600


async def add_outbox_row(engine: AsyncEngine, marker: uuid.UUID, *, age_s: float,
                         confirmed_age_s: float | None) -> int:
    async with engine.begin() as conn:
        return int((await conn.execute(text(
            "INSERT INTO outbox (topic, partition, aggregate_id, payload, created_at,"
            " published_at) VALUES ('balance_changed', 0, CAST(:m AS uuid), '\\x00',"
            " now() - make_interval(secs => :age),"
            " CASE WHEN CAST(:confirmed AS float8) IS NULL THEN NULL"
            "      ELSE now() - make_interval(secs => CAST(:confirmed AS float8)) END)"
            " RETURNING id"), {"m": str(marker), "age": age_s, "confirmed": confirmed_age_s},
        )).scalar_one())


async def remaining(engine: AsyncEngine, sql: str, params: dict[str, object]) -> set[str]:
    async with engine.connect() as conn:
        return {str(row[0]) for row in (await conn.execute(text(sql), params)).all()}


async def test_the_transfer_job_prunes_confirmed_outbox_rows_and_old_rejections(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    settings = dataclasses.replace(base_settings, outbox_retention_s=HOUR,
                                   idempotency_retention_s=24 * HOUR, retention_batch_size=2)
    marker = uuid.uuid4()
    old_confirmed = [await add_outbox_row(engine, marker, age_s=2 * HOUR, confirmed_age_s=2 * HOUR)
                     for _ in range(3)]
    kept = {
        # confirmed, but younger than the retention; unconfirmed however old (the relay still
        # owes their events); young and unconfirmed
        await add_outbox_row(engine, marker, age_s=HOUR / 2, confirmed_age_s=HOUR / 2),
        await add_outbox_row(engine, marker, age_s=3 * HOUR, confirmed_age_s=None),
        await add_outbox_row(engine, marker, age_s=1, confirmed_age_s=None),
    }
    user = await seed.create_user(engine, unique("ret") + "@example.com", "", "R",
                                  password_hash="!")
    async with engine.begin() as conn:
        for key, age in (("old-1", 25 * HOUR), ("old-2", 48 * HOUR), ("new", HOUR)):
            await conn.execute(text(
                "INSERT INTO transfer_rejections (user_id, idempotency_key, from_account_id,"
                " to_account_id, amount, currency, description, reason, created_at)"
                " VALUES (CAST(:u AS uuid), :k, gen_random_uuid(), gen_random_uuid(), 1, 'EUR',"
                " '', 'insufficient_funds', now() - make_interval(secs => :age))"),
                {"u": user, "k": key, "age": age})

    job = transfer_retention(as_service(settings, "transfer-retention"))
    await job.open()
    try:
        deleted = await run_pass(job, settings.retention_batch_size)
    finally:
        await job.close()

    assert deleted["outbox"] >= len(old_confirmed)  # other tests' rows may be that old too
    left = await remaining(engine, "SELECT id FROM outbox WHERE aggregate_id = CAST(:m AS uuid)",
                           {"m": str(marker)})
    assert left == {str(i) for i in kept}
    keys = await remaining(engine, "SELECT idempotency_key FROM transfer_rejections"
                           " WHERE user_id = CAST(:u AS uuid)", {"u": user})
    assert keys == {"new"}


async def test_the_auth_job_prunes_sessions_that_ended_before_the_retention(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    settings = dataclasses.replace(base_settings, session_ttl_s=900,
                                   session_absolute_ttl_s=12 * HOUR,
                                   session_retention_s=24 * HOUR)
    user = await seed.create_user(engine, unique("ret") + "@example.com", "", "R",
                                  password_hash="!")
    # (created, last used, revoked) ages in seconds; None: not revoked.
    sessions = {
        "revoked long ago": (30 * HOUR, 30 * HOUR, 25 * HOUR),
        "idle long ago": (26 * HOUR, 25 * HOUR, None),
        "past its lifetime long ago": (37 * HOUR, 60, None),
        "active": (HOUR, 60, None),
        "revoked recently": (2 * HOUR, 2 * HOUR, HOUR),
        "idle recently": (3 * HOUR, 2 * HOUR, None),
    }
    async with engine.begin() as conn:
        for label, (created, used, revoked) in sessions.items():
            await conn.execute(text(
                "INSERT INTO sessions (user_id, secret_hash, user_agent, created_at, last_used_at,"
                " revoked_at) VALUES (CAST(:u AS uuid), '\\x00', :label,"
                " now() - make_interval(secs => :created), now() - make_interval(secs => :used),"
                " CASE WHEN CAST(:revoked AS float8) IS NULL THEN NULL"
                "      ELSE now() - make_interval(secs => CAST(:revoked AS float8)) END)"),
                {"u": user, "label": label, "created": created, "used": used,
                 "revoked": revoked})

    job = auth_retention(as_service(settings, "auth-retention"))
    await job.open()
    try:
        await run_pass(job, settings.retention_batch_size)
    finally:
        await job.close()

    left = await remaining(engine, "SELECT user_agent FROM sessions WHERE user_id ="
                           " CAST(:u AS uuid)", {"u": user})
    assert left == {"active", "revoked recently", "idle recently"}


@pytest.mark.parametrize(("module", "component"),
                         [("services.transfer.retention", "transfer-retention"),
                          ("services.auth.retention", "auth-retention")])
async def test_each_job_runs_once_as_a_process(base_settings: Settings, module: str,
                                               component: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
           "BANK_DATABASE_URL": as_service(base_settings, component).database_url,
           "BANK_REDIS_NODES": base_settings.redis_nodes, "BANK_LOG_JSON": "false"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--once", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "retention pass done" in output.decode()
