"""`make run` (devstack/components.py, devstack/launcher.py), docker-compose.yml and deploy/k8s
describe one system: the same components, the same ports, the same settings names (taken from
shared/config.py Settings)."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

import pytest

from devstack.components import COMPONENTS, EDGE_HTTPS_PORT, Component
from devstack.launcher import service_env
from devstack.redis_acl import new_users
from services.gateway.deployments import METRICS_PORT
from shared.config import Settings, _env_name
from tests.deploy.conftest import OVERLAYS
from tests.deploy.test_kubernetes import of_kind, pod_template

Obj = dict[str, Any]
BY_NAME = {c.name: c for c in COMPONENTS}
# Long-running processes (Deployments in Kubernetes) and periodic jobs (CronJobs there).
RUNNING = {c.name for c in COMPONENTS if c.schedule is None}
SCHEDULED = {c.name for c in COMPONENTS if c.schedule is not None}
REQUIRED = {_env_name(f.name) for f in Settings.__dataclass_fields__.values()
            if f.metadata.get("required")} | {"BANK_DATABASE_URL"}  # every bank process has a pool
# Infrastructure each deployment runs besides our processes (local: devstack's own servers).
COMPOSE_INFRA = {"postgres", "postgres-roles", "redis-cluster-init", "migrate", "edge",
                 *(f"redis-{i}" for i in range(1, 7))}
# The "monitoring" profile: Prometheus, Grafana and the exporters.
COMPOSE_MONITORING = {"prometheus", "grafana", "redis-exporter", "postgres-exporter"}
K8S_INFRA = {"redis", "redis-cluster-init", "migrate", "edge"}


def expected_ports(component: Component) -> dict[str, int]:
    return component.ports(0)  # in a container every replica listens on the first port


def k8s_env(container: Obj, settings_data: dict[str, str]) -> dict[str, str | None]:
    env: dict[str, str | None] = dict(settings_data) if any(
        "configMapRef" in e for e in container.get("envFrom", [])) else {}
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def settings_configmap(objs: list[Obj]) -> dict[str, str]:
    return next(c["data"] for n, c in of_kind(objs, "ConfigMap").items()
                if n.startswith("bank-settings"))


# ---- components ---------------------------------------------------------------------------------

def test_compose_runs_every_component(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(BY_NAME) | COMPOSE_INFRA | COMPOSE_MONITORING
    for name in COMPOSE_MONITORING:
        assert compose["services"][name]["profiles"] == ["monitoring"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_runs_every_component(overlay: str, objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    workloads = {*of_kind(objs, "Deployment"), *of_kind(objs, "StatefulSet"),
                 *of_kind(objs, "Job")}
    # dev: the StatefulSet and the Job provisioning its logins; prod: CloudNativePG does both.
    database = {"postgres", "postgres-roles"} if overlay == "dev" else set()
    assert workloads == RUNNING | K8S_INFRA | database
    cron_jobs = of_kind(objs, "CronJob")
    assert set(cron_jobs) == SCHEDULED
    for name, job in cron_jobs.items():
        assert job["spec"]["schedule"] == BY_NAME[name].schedule, name
        assert job["spec"]["concurrencyPolicy"] == "Forbid", name
        (container,) = pod_template(job)["spec"]["containers"]
        assert container["args"] == [name, "--once"], name
    if overlay == "prod":
        assert "postgres" in of_kind(objs, "Cluster")


def test_replicated_components_are_replicated_everywhere(compose: dict[str, Any],
                                                         objects: dict[str, list[Obj]]) -> None:
    for component in COMPONENTS:
        in_compose = compose["services"][component.name]["deploy"]["replicas"]
        if component.schedule is not None:  # a CronJob: one run at a time (Forbid)
            assert in_compose == component.replicas == 1, component.name
            continue
        deployment = of_kind(objects["prod"], "Deployment")[component.name]
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
                for h in of_kind(objects["prod"], "HorizontalPodAutoscaler").values()}
        in_k8s = hpas.get(component.name) or deployment["spec"]["replicas"]
        assert (in_compose > 1) == (in_k8s > 1) == (component.replicas > 1), component.name


# ---- ports --------------------------------------------------------------------------------------

def test_compose_ports_match_components(compose: dict[str, Any]) -> None:
    for component in COMPONENTS:
        env = compose["services"][component.name]["environment"]
        declared = {
            kind: int(env[name])
            for kind, name in (("grpc", "BANK_GRPC_PORT"), ("metrics", "BANK_METRICS_PORT"))
            if name in env
        }
        assert declared == expected_ports(component), component.name
    # The edge: HTTPS inside the container as `make run` has it, published on 443.
    assert compose["services"]["edge"]["ports"] == [f"443:{EDGE_HTTPS_PORT}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_ports_match_components(overlay: str, objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    data = settings_configmap(objs)
    workloads = {**of_kind(objs, "Deployment"), **of_kind(objs, "CronJob")}
    for component in COMPONENTS:
        container = pod_template(workloads[component.name])["spec"]["containers"][0]
        container_ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert container_ports == expected_ports(component), component.name
        env = k8s_env(container, data)
        for kind, name in (("grpc", "BANK_GRPC_PORT"), ("metrics", "BANK_METRICS_PORT")):
            if kind in container_ports:
                assert env[name] == str(container_ports[kind]), (component.name, name)
            else:
                assert name not in env, (component.name, name)
    edge = of_kind(objs, "Deployment")["edge"]["spec"]["template"]["spec"]["containers"][0]
    assert edge["ports"] == [{"name": "https", "containerPort": EDGE_HTTPS_PORT},
                             {"name": "metrics", "containerPort": METRICS_PORT}]
    service = of_kind(objs, "Service")["edge"]["spec"]["ports"][0]
    assert (service["port"], service["targetPort"]) == (443, "https")


def test_grpc_targets_point_at_the_service_ports(compose: dict[str, Any],
                                                 objects: dict[str, list[Obj]]) -> None:
    targets = {
        "compose": compose["services"]["account"]["environment"],
        **{overlay: settings_configmap(objs) for overlay, objs in objects.items()},
    }
    for where, env in targets.items():
        for name in ("account", "transfer", "auth"):
            match = re.fullmatch(r"dns:///[a-z0-9-]+:(\d+)", env[f"BANK_{name.upper()}_TARGET"])
            assert match and int(match.group(1)) == BY_NAME[name].grpc_port, (where, name)


# ---- settings names -----------------------------------------------------------------------------

def _compose_envs(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s.get("environment", {}) for name, s in compose["services"].items()
            if s.get("image", "").startswith("${BANK_IMAGE")}


def _k8s_envs(objs: list[Obj]) -> dict[str, dict[str, str | None]]:
    data = settings_configmap(objs)
    out: dict[str, dict[str, str | None]] = {}
    for kind in ("Deployment", "Job", "CronJob"):
        for name, obj in of_kind(objs, kind).items():
            spec = pod_template(obj)["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                if container["image"].split("/")[-1].startswith("cachebank"):
                    out[f"{name}/{container['name']}"] = k8s_env(container, data)
    return out


def test_every_bank_setting_name_exists(compose: dict[str, Any],
                                        objects: dict[str, list[Obj]]) -> None:
    known = set(Settings.env_names())
    used: dict[str, set[str]] = {"compose": set()}
    for env in _compose_envs(compose).values():
        used["compose"] |= {k for k in env if k.startswith("BANK_")}
    for overlay, objs in objects.items():
        used[overlay] = set(settings_configmap(objs))
        for env in _k8s_envs(objs).values():
            used[overlay] |= {k for k in env if k.startswith("BANK_")}
    for where, names in used.items():
        assert names, where
        assert names <= known, f"{where} sets unknown settings: {sorted(names - known)}"


def test_required_settings_are_provided(compose: dict[str, Any],
                                        objects: dict[str, list[Obj]]) -> None:
    for name, env in _compose_envs(compose).items():
        needed = {"BANK_DATABASE_URL"} if name == "migrate" else REQUIRED
        assert needed <= set(env), (name, needed - set(env))
    for overlay, objs in objects.items():
        for name, env in _k8s_envs(objs).items():
            one_shot = name.startswith("migrate/") or name.endswith("/wait-for-schema")
            needed = {"BANK_DATABASE_URL"} if one_shot else REQUIRED
            assert needed <= set(env), (overlay, name, needed - set(env))


def test_deployments_set_what_make_run_sets(compose: dict[str, Any],
                                            objects: dict[str, list[Obj]]) -> None:
    """Every setting the local launcher gives a process, compose and k8s give it too."""
    stand_in = SimpleNamespace(dsn="postgresql://x", startup_nodes_csv="127.0.0.1:1",
                               service_dsn=lambda component: f"postgresql://{component}@x",
                               users=new_users())
    for component in COMPONENTS:
        env = service_env(stand_in, stand_in, component, 0, "k" * 32)  # type: ignore[arg-type]
        # The launcher passes its own environment on: count only what it sets.
        local = {k for k, v in env.items() if k.startswith("BANK_") and os.environ.get(k) != v}
        in_compose = set(compose["services"][component.name]["environment"])
        assert local <= in_compose, (component.name, local - in_compose)
        for overlay, objs in objects.items():
            in_k8s = set(_k8s_envs(objs)[f"{component.name}/{component.name}"])
            assert local <= in_k8s, (overlay, component.name, local - in_k8s)
