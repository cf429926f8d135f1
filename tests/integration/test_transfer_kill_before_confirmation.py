"""A transfer service killed (SIGKILL, a real process) after its transfers committed and their
events went out, before its batched confirmation reached PostgreSQL: the relay confirms the rows,
and every event is delivered once per account version: none lost (each version arrived), none
twice (the relay sent none of them again: the publish script found each in its partition's
published set)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from bank.v1 import transfer_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.ports import free_ports
from devstack.processes import ManagedProcess
from services.transfer.bootstrap import build_relay_app
from shared.config import Settings
from tests.support.account import metric
from tests.support.db_roles import service_settings
from tests.support.sessions import TEST_SESSION_SIGNING_KEY
from tests.support.transfer import EventListener, new_customer, transfer_request

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TRANSFERS = 12


async def wait_serving(port: int, process: ManagedProcess) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.alive, process.describe_failure("exited")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)


async def unconfirmed_rows(engine: AsyncEngine, outbox_ids: list[int]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(
            text("SELECT count(*) FROM outbox WHERE published_at IS NULL"
                 " AND id = ANY(CAST(:ids AS bigint[]))"), {"ids": outbox_ids},
        )).scalar_one())


async def test_a_kill_between_publish_and_confirmation_delivers_each_version_once(
    base_settings: Settings, engine: AsyncEngine, unique: Callable[[str], str], tmp_path: Path,
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000_000)
    bob = await new_customer(engine, unique)
    (port,) = free_ports(1)
    transfer = service_settings(base_settings, "transfer")
    service = ManagedProcess(
        [sys.executable, "-m", "services.transfer"], log_path=tmp_path / "transfer.log",
        name="transfer-killed", cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
             # As the transfer service's own PostgreSQL login and Redis user.
             "BANK_DATABASE_URL": transfer.database_url,
             "BANK_REDIS_NODES": base_settings.redis_nodes,
             "BANK_REDIS_USERNAME": transfer.redis_username,
             "BANK_REDIS_PASSWORD": transfer.redis_password,
             "BANK_GRPC_PORT": str(port), "BANK_METRICS_PORT": "0", "BANK_LOG_JSON": "false",
             "BANK_SESSION_SIGNING_KEY": TEST_SESSION_SIGNING_KEY,
             # The confirmation would come after the test is over: the kill lands before it.
             "BANK_OUTBOX_CONFIRM_INTERVAL_MS": "3600000"},
    )
    async with EventListener(base_settings) as listener:
        service.start()
        try:
            await wait_serving(port, service)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = transfer_pb2_grpc.TransferServiceStub(channel)
                replies = []
                for n in range(TRANSFERS):  # alice's two accounts and bob's, all directions
                    source = alice.accounts[n % 2]
                    destination = [alice.accounts[(n + 1) % 2], bob.accounts[0]][n // 2 % 2]
                    replies.append(await stub.CreateTransfer(
                        transfer_request(source, destination, 100 + n, unique("k")),
                        metadata=alice.metadata))
            outbox_ids = []
            for reply in replies:  # every event is out ...
                events = await listener.wait_for(reply.transfer_id, 2, timeout=10)
                assert len(events) == 2
                outbox_ids += [e.outbox_id for e in events]
            # ... and no row is confirmed: the service dies right here.
            assert await unconfirmed_rows(engine, outbox_ids) == 2 * TRANSFERS
        finally:
            service.kill()
        assert service.returncode == -9

        skipped = metric("bank_events_total", outcome="already_published")
        relay = build_relay_app(service_settings(base_settings, "relay"),
                                min_age_s=0.2, poll_s=0.1)
        await relay.start()
        try:
            deadline = asyncio.get_running_loop().time() + 15
            while await unconfirmed_rows(engine, outbox_ids):
                assert asyncio.get_running_loop().time() < deadline, "the relay did not confirm"
                await asyncio.sleep(0.1)
        finally:
            await relay.stop()
        # The relay found every one of them in the published sets and sent none again (it may
        # find more there: rows another test's relay published and did not live to confirm).
        assert metric("bank_events_total", outcome="already_published") - skipped >= len(
            outbox_ids)

    ids = {reply.transfer_id for reply in replies}
    delivered = Counter((e.account_id, e.version) for e in listener.events
                        if e.transfer_id in ids)
    assert set(delivered.values()) == {1}, "an event was delivered twice"  # as far as seen
    # Every version each account went through in these transfers, without a hole.
    async with engine.connect() as conn:
        expected = {(str(r[0]), int(r[1])) for r in (await conn.execute(
            text("SELECT account_id, account_version FROM transactions"
                 " WHERE transfer_id = ANY(CAST(:t AS uuid[]))"), {"t": list(ids)})).all()}
    assert set(delivered) == expected
    assert len(expected) == 2 * TRANSFERS
