"""Every metric the Grafana dashboard and the alert rules query is exported by a real running
stack.

The services run as their own processes (`python -m services.<name>`, as `make run` starts them)
on free ports against the session's PostgreSQL and Redis Cluster, behind a real Envoy rendered
by the gateway's generator; a user logs in, reads a balance and recent transactions and makes a
transfer through Envoy; then each service's /metrics page and Envoy's /stats/prometheus are
scraped and the dashboard's PromQL names are looked up in the `# TYPE` lines (a histogram's
_bucket/_sum/_count count as the histogram).

Redis' and PostgreSQL's metrics come from the real exporters, run against the same servers:
Debian's prometheus-redis-exporter and prometheus-postgres-exporter (the deployments run the
upstream images of the same programs). Names only Kubernetes can export (CloudNativePG's
instance manager and its Barman Cloud plugin) are in DOCUMENTED, a checked list copied from
their documentation; the recording rules' own names count as exported."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.promql import dashboard_expressions, declared_metrics, missing_metrics
from devstack import seed
from devstack.components import COMPONENTS, GATEWAY_UPSTREAMS
from devstack.ports import free_ports
from devstack.postgres import LocalPostgres
from devstack.processes import ManagedProcess, wait_for_port
from devstack.redis_acl import COMPONENT_USERS
from devstack.redis_cluster import LocalRedisCluster
from services.gateway.bundle import render_local
from services.gateway.envoy_clusters import Upstream
from services.gateway.envoy_process import EnvoyProcess
from shared.config import Settings
from tests.support.sessions import TEST_SESSION_SIGNING_KEY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "bank.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
# Exported only in Kubernetes: {name: where its documentation lists it}.
DOCUMENTED = {
    "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp":
        "CloudNativePG Barman Cloud plugin, Observability",
    "cnpg_backends_total": "CloudNativePG, Monitoring, default metrics (backends)",
}
REDIS_METRICS = {"redis_memory_used_bytes", "redis_memory_max_bytes", "redis_evicted_keys_total",
                 "redis_keyspace_hits_total", "redis_keyspace_misses_total"}
PASSWORD = "Dashboard-check-2026"
SERVICES = {component.name: component.module for component in COMPONENTS}
PORT_KINDS = {component.name: [kind for kind, port in (("grpc", component.grpc_port),
                                                       ("metrics", component.metrics_port))
                               if port is not None] for component in COMPONENTS}


@dataclass
class RunningStack:
    ports: dict[str, dict[str, int]]
    processes: dict[str, ManagedProcess]
    edge_url: str
    edge_tls: ssl.SSLContext
    envoy_stats_url: str
    exporter_urls: dict[str, str]

    def metrics_urls(self) -> dict[str, str]:
        urls = {name: f"http://127.0.0.1:{ports['metrics']}/metrics"
                for name, ports in self.ports.items() if "metrics" in ports}
        return {**urls, "envoy": self.envoy_stats_url, **self.exporter_urls}


def _debian(program: str) -> str:
    """An exporter from Debian's packages (scripts/ensure-system-deps.sh installs them)."""
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} is not installed: run `make setup` (scripts/ensure-system-deps.sh)")
    return found


def rule_expressions() -> tuple[list[str], set[str]]:
    """The PromQL of every rule, and the names the recording rules define."""
    rules = [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
             for rule in group["rules"]]
    return [str(r["expr"]) for r in rules], {str(r["record"]) for r in rules if "record" in r}


@pytest.fixture(scope="module")
def stack(postgres: LocalPostgres, redis_cluster: LocalRedisCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    ports: dict[str, dict[str, int]] = {}
    for name in SERVICES:  # the ports each component has (the retention jobs have none)
        kinds = PORT_KINDS[name]
        ports[name] = dict(zip(kinds, free_ports(len(kinds)), strict=True)) if kinds else {}

    def target(name: str) -> str:
        return f"ipv4:127.0.0.1:{ports[name]['grpc']}"

    logs = tmp_path_factory.mktemp("dashboard-services")
    processes: dict[str, ManagedProcess] = {}
    try:
        for name, module in SERVICES.items():
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
            # Each process as its own Redis user, as make run starts them.
            if name in COMPONENT_USERS:
                env.update(redis_cluster.users[COMPONENT_USERS[name]].env())
            if "metrics" in ports[name]:
                env["BANK_METRICS_PORT"] = str(ports[name]["metrics"])
            if "grpc" in ports[name]:
                env["BANK_GRPC_PORT"] = str(ports[name]["grpc"])
            assert module is not None
            proc = ManagedProcess([sys.executable, "-m", module],
                                  log_path=logs / f"{name}.log", name=name, cwd=ROOT, env=env)
            proc.start()
            processes[name] = proc
        for name, proc in processes.items():
            listen = ports[name].get("grpc") or ports[name].get("metrics")
            if listen is not None:
                wait_for_port("127.0.0.1", listen, timeout=60, process=proc)
        https_port, admin_port = free_ports(2)
        upstreams = [Upstream(name, (("127.0.0.1", ports[name]["grpc"]),))
                     for name in GATEWAY_UPSTREAMS]
        settings = Settings(database_url="", redis_nodes="")
        config = render_local(logs / "gateway", settings, upstreams, https_port=https_port,
                              admin_port=admin_port)
        redis_port, postgres_port = free_ports(2)
        node = redis_cluster.startup_nodes_csv.split(",")[0]
        exporters = {
            "redis-exporter": ([_debian("prometheus-redis-exporter"), "-redis.addr",
                                f"redis://{node}", "-web.listen-address",
                                f"127.0.0.1:{redis_port}"],
                               # Its own ACL user, as in the deployments (statistics, no keys).
                               {"REDIS_USER": "exporter",
                                "REDIS_PASSWORD": redis_cluster.users["exporter"].password},
                               redis_port),
            "postgres-exporter": ([_debian("prometheus-postgres-exporter"),
                                   f"--web.listen-address=127.0.0.1:{postgres_port}"],
                                  # lib/pq defaults to sslmode=require; the harness has no TLS
                                  {"DATA_SOURCE_NAME": f"{postgres.dsn}?sslmode=disable"},
                                  postgres_port),
        }
        for name, (argv, extra, port) in exporters.items():
            proc = ManagedProcess(argv, log_path=logs / f"{name}.log", name=name, cwd=ROOT,
                                  env={**os.environ, **extra})
            proc.start()
            processes[name] = proc
            wait_for_port("127.0.0.1", port, timeout=30, process=proc)
        with EnvoyProcess(config, admin_port, logs / "envoy.log") as envoy:
            for name in GATEWAY_UPSTREAMS:
                envoy.wait_healthy_hosts(name, 1, timeout_s=60)
            yield RunningStack(
                ports, processes, f"https://127.0.0.1:{https_port}",
                ssl.create_default_context(cafile=str(logs / "gateway" / "tls.crt")),
                f"http://127.0.0.1:{admin_port}/stats/prometheus",
                {"redis": f"http://127.0.0.1:{redis_port}/metrics",
                 "postgres": f"http://127.0.0.1:{postgres_port}/metrics"})
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


async def _exercise_through_the_edge(stack: RunningStack, email: str, account: str,
                                     other: str) -> None:
    async with httpx.AsyncClient(base_url=stack.edge_url, verify=stack.edge_tls,
                                 timeout=10.0) as client:
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


async def test_every_dashboard_metric_is_exported(
    stack: RunningStack, engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    email, account = await _user_with_money(engine, unique)
    _, other = await _user_with_money(engine, unique)
    await _exercise_through_the_edge(stack, email, account, other)

    pages: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        for name, url in stack.metrics_urls().items():
            response = await client.get(url)
            assert response.status_code == 200, f"{name} {url}: {response.status_code}"
            pages[name] = response.text

    declared: dict[str, str] = {}
    for page in pages.values():
        declared.update(declared_metrics(page))
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    assert len(expressions) >= 10
    rules, recorded = rule_expressions()
    assert len(rules) >= 15
    known = {**declared, **{name: "recording rule" for name in recorded},
             **{name: "documented" for name in DOCUMENTED}}
    assert missing_metrics(expressions + rules, known) == {}
    # The exporters' names are real, not only listed: the Redis exporter exported each one.
    assert REDIS_METRICS <= set(declared) | set(_sampled(pages["redis"]))
    assert "pg_stat_activity_count" in declared
    assert not set(DOCUMENTED) & set(declared), "exported here: take it off the documented list"

    # Not only declared: the calls above were counted.
    assert 'method="GetBalance"' in pages["account"]
    assert "bank_grpc_requests_total{" in pages["account"]
    assert 'bank_cache_requests_total{kind="balance"' in pages["account"]
    assert "bank_session_checks_total{" in pages["account"]
    assert "envoy_cluster_upstream_rq_time_bucket{" in pages["envoy"]


def _sampled(page: str) -> set[str]:
    """Names with a sample line (exporters without # TYPE lines for some gauges)."""
    return {line.split("{")[0].split()[0] for line in page.splitlines()
            if line and not line.startswith("#")}


def test_local_scrape_targets_match_the_devstack_ports() -> None:
    """deploy/prometheus's `make run` job scrapes every replica of every component."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    local = next(job for job in config["scrape_configs"] if job["job_name"] == "bank-local")
    scraped = {t for group in local["static_configs"] for t in group["targets"]}
    expected = set()
    for component in COMPONENTS:
        for replica in range(component.replicas):
            ports = component.ports(replica)
            port = ports.get("metrics")
            if port:
                expected.add(f"127.0.0.1:{port}")
    assert scraped == expected
