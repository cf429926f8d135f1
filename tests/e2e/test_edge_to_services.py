"""End to end over HTTPS: client -> Envoy (TLS, transcoding, round robin) -> the auth, account
and transfer services (gRPC) -> PostgreSQL and the Redis Cluster.

register, login, balance (a miss, then a hit), transfer with an Idempotency-Key, the same
transfer again (same reply, nothing moves twice), the balance showing the transfer at once
(read-your-writes), a Redis miss on the session (validated through the auth service), logout,
then 401."""

from __future__ import annotations

import dataclasses
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.ports import free_ports
from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from services.gateway.bundle import render_local
from services.gateway.envoy_clusters import Upstream
from services.gateway.envoy_process import EnvoyProcess
from services.transfer.bootstrap import build_transfer_app
from shared.config import Settings
from shared.redis_client import create_redis_cluster
from shared.sessions import session_key

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PASSWORD = "glacier violet umbrella 42"
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}


@dataclass
class Edge:
    url: str
    verify: ssl.SSLContext


@pytest.fixture(scope="module")
async def edge(base_settings: Settings, engine: AsyncEngine,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    await seed.ensure_settlement_account(engine)
    settings = dataclasses.replace(base_settings, **CHEAP_ARGON2)
    auth = build_auth_app(dataclasses.replace(settings, service_name="auth"), port=0)
    account = build_account_app(dataclasses.replace(settings, service_name="account"), port=0)
    transfer = build_transfer_app(dataclasses.replace(settings, service_name="transfer"), port=0)
    started: list[object] = []
    try:
        for app in (auth, account, transfer):
            await app.start()
            started.append(app)
        upstreams = [Upstream(name, (("127.0.0.1", app.grpc.port),))  # type: ignore[attr-defined]
                     for name, app in (("auth", auth), ("account", account),
                                       ("transfer", transfer))]
        folder = Path(tmp_path_factory.mktemp("gateway"))
        https_port, admin_port = free_ports(2)
        config = render_local(folder, settings, upstreams, https_port=https_port,
                              admin_port=admin_port)
        async with EnvoyProcess(config, admin_port, folder / "envoy.log") as envoy:
            for upstream in upstreams:
                await envoy.healthy(upstream.name, 1)
            yield Edge(f"https://127.0.0.1:{https_port}",
                       ssl.create_default_context(cafile=str(folder / "tls.crt")))
    finally:
        for app in reversed(started):
            await app.stop()  # type: ignore[attr-defined]


async def test_register_login_read_transfer_retry_read_logout(
    edge: Edge, base_settings: Settings, engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient(base_url=edge.url, verify=edge.verify, timeout=15) as http:
        email = f"alice-{uuid.uuid4().hex[:10]}@example.com"
        registered = await http.post("/v1/auth/register", json={
            "email": email, "password": PASSWORD, "name": "Alice"})
        assert registered.status_code == 200, registered.text
        alice_account = registered.json()["accountId"]
        payee = await http.post("/v1/auth/register", json={
            "email": f"bob-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD,
            "name": "Bob"})
        assert payee.status_code == 200, payee.text
        bob_account = payee.json()["accountId"]
        await seed.deposit(engine, alice_account, 10_000)

        login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}

        first = await http.get(f"/v1/accounts/{alice_account}/balance", headers=auth)
        second = await http.get(f"/v1/accounts/{alice_account}/balance", headers=auth)
        assert first.status_code == 200, first.text
        assert first.json()["source"] == "READ_SOURCE_DATABASE"
        assert second.json()["source"] == "READ_SOURCE_CACHE"
        assert second.json()["balance"] == {"minorUnits": "10000", "currency": "EUR",
                                            "formatted": "100.00"}

        order = {"fromAccountId": alice_account, "toAccountId": bob_account,
                 "amount": {"minorUnits": "2500", "currency": "EUR"}, "description": "rent"}
        key = {"Idempotency-Key": f"e2e-{uuid.uuid4().hex}"}
        transfer = await http.post("/v1/transfers", json=order, headers={**auth, **key})
        assert transfer.status_code == 200, transfer.text
        again = await http.post("/v1/transfers", json=order, headers={**auth, **key})
        assert again.status_code == 200, again.text
        assert again.json()["transferId"] == transfer.json()["transferId"]
        assert again.json()["sourceBalance"] == transfer.json()["sourceBalance"]
        version = int(transfer.json()["sourceBalance"]["version"])

        after = await http.get(f"/v1/accounts/{alice_account}/balance", headers=auth)
        assert after.status_code == 200, after.text
        assert after.json()["balance"]["minorUnits"] == "7500"  # moved once, seen at once
        assert int(after.json()["version"]) >= version

        # The session's Redis entry is gone (eviction, failover): the auth service decides.
        redis = create_redis_cluster(base_settings)
        try:
            user_id, session_id, _ = token.split(".")
            await redis.delete(session_key(user_id, session_id))
        finally:
            await redis.aclose()
        assert (await http.get("/v1/accounts", headers=auth)).status_code == 200

        logout = await http.post("/v1/auth/logout", json={}, headers=auth)
        assert logout.status_code == 200, logout.text
        refused = await http.get(f"/v1/accounts/{alice_account}/balance", headers=auth)
        assert refused.status_code == 401
        assert refused.json()["code"] == 16
