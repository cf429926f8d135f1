"""The PostgreSQL connection budget of docs/database.md, recomputed from the rendered manifests:
every process's pool at the HPA maxima, with a rollout's surge on every Deployment at once (a
settings change rolls them all), the retention CronJobs and the migrate Job, must stay within
80 % of max_connections. In prod the services go through the Pooler: PostgreSQL then sees the
Pooler's server connections, and the Pooler must accept every client connection."""

from __future__ import annotations

from typing import Any

import pytest

from services.transfer.bootstrap import RELAY_POOL_SIZE
from shared.config import Settings
from shared.pg_pool import PROBE_CONNECTIONS
from shared.retention import RETENTION_POOL_SIZE
from tests.deploy.conftest import OVERLAYS
from tests.deploy.test_kubernetes import GRPC_SERVICES, of_kind

Obj = dict[str, Any]
HEADROOM = 0.8
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100
MIGRATE_CONNECTIONS = 1  # Alembic with a NullPool


def pool_size(objs: list[Obj]) -> int:
    settings = next(c for n, c in of_kind(objs, "ConfigMap").items()
                    if n.startswith("bank-settings"))["data"]
    return int(settings.get("BANK_DB_POOL_SIZE",
                            Settings.__dataclass_fields__["db_pool_size"].default))


def most_pods(deployment: Obj, hpas: dict[str, Obj]) -> int:
    """Replicas at the HPA maximum, plus the surge of a rolling update."""
    name = deployment["metadata"]["name"]
    pods = hpas[name]["spec"]["maxReplicas"] if name in hpas else deployment["spec"]["replicas"]
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        pods += int(strategy.get("rollingUpdate", {}).get("maxSurge", 1))
    return int(pods)


def client_connections(objs: list[Obj]) -> dict[str, int]:
    """What each component can open at most: its pods times its pool (and probe)."""
    size = pool_size(objs)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h
            for h in of_kind(objs, "HorizontalPodAutoscaler").values()}
    deployments = of_kind(objs, "Deployment")
    out = {name: most_pods(deployments[name], hpas) * (size + PROBE_CONNECTIONS)
           for name in GRPC_SERVICES}
    out["outbox-relay"] = most_pods(deployments["outbox-relay"], hpas) * RELAY_POOL_SIZE
    for name, job in of_kind(objs, "CronJob").items():
        assert job["spec"]["concurrencyPolicy"] == "Forbid", name  # one run at a time
        out[name] = RETENTION_POOL_SIZE
    return out


def max_connections(objs: list[Obj]) -> int:
    """From the CloudNativePG Cluster (prod) or the StatefulSet's `-c max_connections=` (dev)."""
    clusters = of_kind(objs, "Cluster")
    if clusters:
        return int(clusters["postgres"]["spec"]["postgresql"]["parameters"]["max_connections"])
    (container,) = of_kind(objs, "StatefulSet")["postgres"]["spec"]["template"]["spec"][
        "containers"]
    args = container.get("args", [])
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "-c" and value.startswith("max_connections="):
            return int(value.split("=", 1)[1])
    return POSTGRES_DEFAULT_MAX_CONNECTIONS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_connections_fit_max_connections_with_room(overlay: str,
                                                       objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    clients = client_connections(objs)
    poolers = of_kind(objs, "Pooler")
    if poolers:
        (pooler,) = poolers.values()
        params = pooler["spec"]["pgbouncer"]["parameters"]
        instances = int(pooler["spec"]["instances"])
        # Every client connection fits one PgBouncer (the Service may send them all to one).
        assert sum(clients.values()) <= int(params["max_client_conn"]), clients
        server = instances * (int(params["default_pool_size"])
                              + int(params.get("reserve_pool_size", "0")))
        direct = server + MIGRATE_CONNECTIONS
    else:
        direct = sum(clients.values()) + MIGRATE_CONNECTIONS
    assert direct <= HEADROOM * max_connections(objs), (overlay, direct, clients)


def test_the_documented_budget_is_the_manifests_one(objects: dict[str, list[Obj]]) -> None:
    """docs/database.md's table: 195 for services and jobs (prod counts, before the Pooler)."""
    from tests.deploy.conftest import ROOT

    clients = client_connections(objects["prod"])
    total = sum(clients.values()) + MIGRATE_CONNECTIONS
    doc = (ROOT / "docs" / "database.md").read_text()
    assert f"**{total}**" in doc, (total, clients)
