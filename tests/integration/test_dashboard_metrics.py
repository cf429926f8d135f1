"""Every metric the Grafana dashboard queries is exported by a real running service.

The services run as their own processes (`python -m services.<name>`, as `make run` starts them)
on free ports against the session's PostgreSQL and Redis Cluster; a user reads a balance, lists
transactions, makes a transfer and logs in through the gateway (or, without a gateway, over
gRPC); then each /metrics page is scraped and the dashboard's PromQL names are looked up in the
`# TYPE` lines (a histogram's _bucket/_sum/_count count as the histogram)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from bank.v1 import account_pb2, account_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.promql import dashboard_expressions, declared_metrics, missing_metrics
from devstack import seed
from devstack.components import COMPONENTS
from devstack.ports import free_ports
from devstack.postgres import LocalPostgres
from devstack.processes import ManagedProcess, wait_for_port
from devstack.redis_cluster import LocalRedisCluster
from tests.support.sessions import TEST_SESSION_SIGNING_KEY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "bank.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PASSWORD = "Dashboard-check-2026"
# module -> the ports it needs (gRPC services: grpc + metrics; gateway: http, which serves /metrics)
SERVICES = {
    "account": "services.account",
    "transfer": "services.transfer",
    "auth": "services.auth",
    "outbox-relay": "services.transfer.relay",
    "gateway": "services.gateway",
}


def _module_exists(module: str) -> bool:
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(module + ".__main__")
        return spec is not None
    except ModuleNotFoundError:
        return False


@dataclass
class RunningServices:
    ports: dict[str, dict[str, int]]
    processes: dict[str, ManagedProcess]

    def metrics_urls(self) -> dict[str, str]:
        out = {}
        for name, ports in self.ports.items():
            port = ports.get("metrics") or ports.get("http")
            if port:
                out[name] = f"http://127.0.0.1:{port}/metrics"
        return out


@pytest.fixture(scope="module")
def services(postgres: LocalPostgres, redis_cluster: LocalRedisCluster,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServices]:
    names = [n for n, module in SERVICES.items() if _module_exists(module)]
    assert "account" in names, "the account service must exist"
    ports: dict[str, dict[str, int]] = {}
    for name in names:
        kinds = ["http"] if name == "gateway" else ["metrics"] if name == "outbox-relay" \
            else ["grpc", "metrics"]
        ports[name] = dict(zip(kinds, free_ports(len(kinds)), strict=True))

    def target(name: str) -> str:
        return f"ipv4:127.0.0.1:{ports[name]['grpc']}" if name in ports else "ipv4:127.0.0.1:1"

    logs = tmp_path_factory.mktemp("dashboard-services")
    processes: dict[str, ManagedProcess] = {}
    try:
        for name in names:
            env = {
                **os.environ,
                "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
                "BANK_DATABASE_URL": postgres.dsn,
                "BANK_REDIS_NODES": redis_cluster.startup_nodes_csv,
                "BANK_SERVICE_NAME": name,
                "BANK_SESSION_SIGNING_KEY": TEST_SESSION_SIGNING_KEY,
                "BANK_ACCOUNT_TARGET": target("account"),
                "BANK_TRANSFER_TARGET": target("transfer"),
                "BANK_AUTH_TARGET": target("auth"),
            }
            for kind, variable in (("grpc", "BANK_GRPC_PORT"), ("metrics", "BANK_METRICS_PORT"),
                                   ("http", "BANK_GATEWAY_PORT")):
                if kind in ports[name]:
                    env[variable] = str(ports[name][kind])
            proc = ManagedProcess([sys.executable, "-m", SERVICES[name]],
                                  log_path=logs / f"{name}.log", name=name, cwd=ROOT, env=env)
            proc.start()
            processes[name] = proc
        for name, proc in processes.items():
            listen = ports[name].get("grpc") or ports[name].get("http") or ports[name]["metrics"]
            wait_for_port("127.0.0.1", listen, timeout=60, process=proc)
        yield RunningServices(ports, processes)
    finally:
        for proc in processes.values():
            proc.stop(timeout=15)


async def _user_with_money(engine: AsyncEngine, unique: Callable[[str], str]) -> tuple[str, str]:
    await seed.ensure_settlement_account(engine)
    email = unique("dash") + "@example.com"
    user = await seed.create_user(engine, email, PASSWORD, "Dashboard User")
    account = await seed.create_account(engine, user)
    await seed.deposit(engine, account, 50_000)
    return email, account


async def _exercise_gateway(base_url: str, email: str, account: str, other: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        for _ in range(120):  # the gateway says ready once the services answer
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.5)
        login = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"authorization": f"Bearer {login.json()['token']}"}
        for _ in range(2):
            balance = await client.get(f"/v1/accounts/{account}/balance", headers=auth)
            assert balance.status_code == 200, balance.text
        recent = await client.get(f"/v1/accounts/{account}/transactions:recent", headers=auth)
        assert recent.status_code == 200, recent.text
        transfer = await client.post(
            "/v1/transfers",
            json={"fromAccountId": account, "toAccountId": other,
                  "amount": {"minorUnits": "125", "currency": "EUR"}},
            headers={**auth, "idempotency-key": str(uuid.uuid4())},
        )
        assert transfer.status_code == 200, transfer.text


async def _exercise_account_over_grpc(port: int, engine: AsyncEngine, account: str,
                                      user_id: str) -> None:
    from tests.support.sessions import open_session

    token = await open_session(engine, user_id)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        for _ in range(2):
            await stub.GetBalance(account_pb2.GetBalanceRequest(account_id=account),
                                  metadata=(("authorization", f"Bearer {token}"),),
                                  timeout=10, wait_for_ready=True)


async def test_every_dashboard_metric_is_exported(
    services: RunningServices, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    email, account = await _user_with_money(engine, unique)
    _, other = await _user_with_money(engine, unique)
    if "gateway" in services.ports:
        await _exercise_gateway(f"http://127.0.0.1:{services.ports['gateway']['http']}",
                                email, account, other)
    else:
        user_id = await _owner(engine, account)
        await _exercise_account_over_grpc(services.ports["account"]["grpc"], engine, account,
                                          user_id)

    pages: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        for name, url in services.metrics_urls().items():
            response = await client.get(url)
            assert response.status_code == 200, f"{name} {url}: {response.status_code}"
            pages[name] = response.text

    declared: dict[str, str] = {}
    for page in pages.values():
        declared.update(declared_metrics(page))
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    assert len(expressions) >= 10
    assert missing_metrics(expressions, declared) == {}

    # Not only declared: the calls above were counted.
    assert 'method="GetBalance"' in pages["account"]
    assert "bank_grpc_requests_total{" in pages["account"]
    assert 'bank_cache_requests_total{kind="balance"' in pages["account"]
    if "gateway" in pages:
        assert "bank_gateway_requests_total{" in pages["gateway"]


async def _owner(engine: AsyncEngine, account: str) -> str:
    from sqlalchemy import text

    async with engine.connect() as conn:
        row = await conn.execute(
            text("SELECT owner_user_id::text FROM accounts WHERE id = CAST(:a AS uuid)"),
            {"a": account})
        return str(row.scalar_one())


def test_local_scrape_targets_match_the_devstack_ports() -> None:
    """deploy/prometheus's `make run` job scrapes every replica of every component (the gateway on
    its HTTP port, where it serves /metrics)."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    local = next(job for job in config["scrape_configs"] if job["job_name"] == "bank-local")
    scraped = {t for group in local["static_configs"] for t in group["targets"]}
    expected = set()
    for component in COMPONENTS:
        for replica in range(component.replicas):
            ports = component.ports(replica)
            port = ports.get("http") if component.name == "gateway" else ports.get("metrics")
            if port:
                expected.add(f"127.0.0.1:{port}")
    assert scraped == expected
