"""A hung Redis (every node SIGSTOPped: sockets open, nothing answers) costs a request one Redis
deadline at most, then nothing: the account, transfer and auth services keep answering from
PostgreSQL within a deadline far below the gRPC one, no call waits on Redis once a node is known
not to answer, the event subscriber notices the silence, and everything comes back when Redis
does. Each service runs once, in process, on a private Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from bank.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc, transfer_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.postgres import LocalPostgres
from devstack.redis_cluster import LocalRedisCluster
from services.account.bootstrap import AccountApp, build_account_app
from services.account.service_layer.cache_layout import balance_key
from services.auth.bootstrap import build_auth_app
from services.transfer.bootstrap import build_transfer_app
from shared.cache import decode_entry
from shared.config import Settings
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import FLOORS_UNSURE_S
from tests.conftest import settings_for
from tests.support.account import Customer, eventually, metric, new_customer
from tests.support.auth import PASSWORD, TEST_AUTH_SETTINGS, random_address
from tests.support.db_roles import service_settings
from tests.support.transfer import transfer_request

pytestmark = pytest.mark.integration

# The bound a call must meet while Redis hangs: one Redis deadline (100 ms) or two on the first
# calls, plus PostgreSQL, with room for a loaded machine; the gRPC deadline of the edge is 5 s.
HUNG_CALL_DEADLINE_S = 1.0
ADDRESS = random_address()  # one client address: the same Redis keys in every round
CACHE = account_pb2.READ_SOURCE_CACHE


@dataclass
class Services:
    account: AccountApp
    pipelines: list[ClusterPipeline]
    accounts: account_pb2_grpc.AccountServiceStub
    transfers: transfer_pb2_grpc.TransferServiceStub
    auth: auth_pb2_grpc.AuthServiceStub

    @property
    def redis_timeouts(self) -> int:
        return sum(p.timeouts for p in self.pipelines)


@contextlib.asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        apps: list[Any] = []
        stubs: list[Any] = []
        for name, build, stub in (("account", build_account_app,
                                   account_pb2_grpc.AccountServiceStub),
                                  ("transfer", build_transfer_app,
                                   transfer_pb2_grpc.TransferServiceStub),
                                  ("auth", build_auth_app, auth_pb2_grpc.AuthServiceStub)):
            app = build(service_settings(settings, name), port=0)
            await app.start()
            stack.push_async_callback(app.stop)
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
            apps.append(app)
            stubs.append(stub(channel))
        assert apps[0].events is not None
        await apps[0].events.wait_caught_up()
        yield Services(apps[0], [a.redis_pipeline for a in apps], *stubs)


async def one_of_everything(services: Services, alice: Customer, bob: Customer,
                            email: str) -> None:
    """Reads, a transfer, a login, a session check: each within the hung-Redis deadline."""
    deadline = HUNG_CALL_DEADLINE_S
    balance = account_pb2.GetBalanceRequest(account_id=alice.account_id)
    await asyncio.gather(
        *(services.accounts.GetBalance(balance, metadata=alice.metadata, timeout=deadline)
          for _ in range(4)),
        services.accounts.ListRecentTransactions(
            account_pb2.ListRecentTransactionsRequest(account_id=bob.account_id),
            metadata=bob.metadata, timeout=deadline),
        services.transfers.CreateTransfer(
            transfer_request(alice.account_id, bob.account_id, 1, str(uuid.uuid4())),
            metadata=alice.metadata, timeout=deadline),
        services.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD),
                            metadata=(("x-forwarded-for", ADDRESS),), timeout=deadline),
        services.auth.ValidateSession(auth_pb2.ValidateSessionRequest(token=bob.token),
                                      timeout=deadline),
    )


async def test_a_hung_redis_costs_one_deadline_then_nothing(
    postgres: LocalPostgres, private_redis_cluster: LocalRedisCluster, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    # No half-open probe during the test: what keeps calls off the hung nodes is the client
    # knowing they do not answer, and what brings Redis back is the client seeing them answer.
    settings = dataclasses.replace(settings_for(postgres, private_redis_cluster,
                                                circuit_reset_s=60.0), **TEST_AUTH_SETTINGS)
    cluster = private_redis_cluster
    async with running_services(settings) as services:
        alice = await new_customer(engine, unique, deposit=5_000,
                                   redis=services.account.redis_pipeline)
        bob = await new_customer(engine, unique, deposit=5_000,
                                 redis=services.account.redis_pipeline)
        email = unique("hung") + "@example.com"
        await services.auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD,
                                                              name="H"))
        await one_of_everything(services, alice, bob, email)
        reconnects = metric("bank_events_total", outcome="reconnect")

        await asyncio.to_thread(cluster.pause_all_nodes)
        try:
            # The first calls meet the hung nodes: one deadline each, at most. (Two rounds: the
            # transfer's events are published in the background, a moment later.)
            for _ in range(2):
                await one_of_everything(services, alice, bob, email)
            await asyncio.sleep(0.3)
            # Then nothing: a node that timed out once is known not to answer, so no call of
            # that process waits for it again (the client's own pings do, in the background).
            waited = services.redis_timeouts
            assert waited > 0
            for _ in range(5):
                await one_of_everything(services, alice, bob, email)
            assert services.redis_timeouts == waited

            # The event subscriber hears nothing from its connections, not even its pings: it
            # gives them up and keeps trying to subscribe again.
            await eventually(lambda: _async(not services.account.applied_versions.live),
                             timeout_s=10)
        finally:
            await asyncio.to_thread(cluster.resume_all_nodes)

        # Redis is back: the cache serves again, resubscribed, with what changed meanwhile.
        balance = account_pb2.GetBalanceRequest(account_id=alice.account_id)

        async def served_from_cache() -> bool:
            reply = await services.accounts.GetBalance(balance, metadata=alice.metadata)
            return bool(reply.source == CACHE)

        # Floors written during the hang failed: for FLOORS_UNSURE_S after the nodes answer
        # again, the users of their slots read PostgreSQL.
        await eventually(served_from_cache, timeout_s=FLOORS_UNSURE_S + 10)
        assert services.account.events is not None
        await services.account.events.wait_caught_up()
        assert metric("bank_events_total", outcome="reconnect") > reconnects

        # A transfer's event reaches the recipient's cached balance (nobody reads it meanwhile).
        await services.accounts.GetBalance(account_pb2.GetBalanceRequest(
            account_id=bob.account_id), metadata=bob.metadata)
        await services.transfers.CreateTransfer(
            transfer_request(alice.account_id, bob.account_id, 1, str(uuid.uuid4())),
            metadata=alice.metadata)
        stored = await stored_version(engine, bob.account_id)

        async def event_applied() -> bool:
            key = balance_key(bob.account_id)
            raw = await services.account.redis_pipeline.execute(key, "GET", key)
            entry = decode_entry(raw) if raw is not None else None
            return entry is not None and entry.version == stored

        await eventually(event_applied, timeout_s=2)


async def stored_version(engine: AsyncEngine, account_id: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT version FROM accounts WHERE id = :id"),
                                       {"id": account_id})).scalar_one())


async def _async(value: bool) -> bool:
    return value
