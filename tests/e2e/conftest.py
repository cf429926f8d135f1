"""The whole request path on real parts (`edge`): Envoy (TLS, transcoding, per-request round
robin) in front of two replicas each of the auth, account and transfer services, on the harness'
PostgreSQL and Redis Cluster; or the services alone (`bank`), as internal callers reach them.
Started once per module, stopped even when a test fails."""

from __future__ import annotations

import dataclasses
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from cachebank_client import Endpoints
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from services.gateway.envoy_clusters import Upstream
from services.transfer.bootstrap import build_transfer_app
from shared.config import Settings
from tests.support.auth import TEST_AUTH_SETTINGS
from tests.support.db_roles import as_service, service_settings
from tests.support.gateway import envoy_in_front

PASSWORD = "glacier violet umbrella 42"
REPLICAS = 2
# Account first: auth's logins warm the account service's cache (its target is set below).
BUILDERS: dict[str, Any] = {
    "account": build_account_app, "transfer": build_transfer_app, "auth": build_auth_app,
}


@dataclass
class Edge:
    url: str
    verify: ssl.SSLContext

    def client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.verify, timeout=15, **options)


def account_target(upstreams: list[Upstream]) -> str:
    """Client-side round robin over the account replicas started so far."""
    started = [u for u in upstreams if u.name == "account"]
    if not started:
        return "ipv4:127.0.0.1:1"
    return "ipv4:" + ",".join(f"{host}:{port}" for host, port in started[0].endpoints)


@pytest.fixture(scope="module")
async def edge(base_settings: Settings, engine: AsyncEngine,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    await seed.ensure_settlement_account(engine)
    # A Redis deadline of 1 s instead of 100 ms: these tests check what the stack does while
    # Redis answers (exact limits across replicas, revocation); on a CPU-starved CI machine a
    # 100 ms deadline can pass and hand a burst to the per-replica fallback limiter, which is
    # what the Redis-fault tests (tests/integration/test_hung_redis.py, test_request_gate.py)
    # are for.
    settings = dataclasses.replace(base_settings, redis_timeout_ms=1000, **TEST_AUTH_SETTINGS)
    async with AsyncExitStack() as stack:
        upstreams = []
        for name, build in BUILDERS.items():
            ports = []
            for _ in range(REPLICAS):
                app = build(as_service(dataclasses.replace(
                    settings, service_name=name, account_target=account_target(upstreams))),
                    port=0)
                await app.start()
                stack.push_async_callback(app.stop)
                ports.append(("127.0.0.1", app.grpc.port))
            upstreams.append(Upstream(name, tuple(ports)))
        front = await stack.enter_async_context(
            envoy_in_front(Path(tmp_path_factory.mktemp("gateway")), settings, upstreams))
        yield Edge(front.url, front.tls)


# ---- the services without the edge: what internal callers (the client package, bankctl) see ----

@dataclass
class Customer:
    email: str
    user_id: str
    account_id: str


@dataclass
class Bank:
    endpoints: Endpoints
    engine: AsyncEngine

    async def customer(self, deposit: int = 0) -> Customer:
        email = f"client-{uuid.uuid4().hex[:12]}@example.com"
        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
        user = await seed.create_user(self.engine, email, PASSWORD, "Client", cheap)
        account = await seed.create_account(self.engine, user)
        if deposit:
            await seed.deposit(self.engine, account, deposit)
        return Customer(email, user, account)


@pytest.fixture(scope="module")
async def bank(base_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Bank]:
    await seed.ensure_settlement_account(engine)
    settings = dataclasses.replace(base_settings, **TEST_AUTH_SETTINGS)
    targets: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        for name, build in BUILDERS.items():
            ports = []
            for _ in range(2):
                app: Any = build(service_settings(settings, name), port=0)
                await app.start()
                stack.push_async_callback(app.stop)
                ports.append(f"127.0.0.1:{app.grpc.port}")
            targets[name] = "ipv4:" + ",".join(ports)
        yield Bank(Endpoints(targets["account"], targets["transfer"], targets["auth"]), engine)


