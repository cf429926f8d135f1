"""The gateway bundles of both deployments: what the generator (the one `make run` uses) makes
today, accepted by `envoy --mode validate` (broken variants rejected), run with make run's flags,
mounted where Envoy reads them, pointing at the services' headless names and gRPC ports."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.components import COMPONENTS, EDGE_ADMIN_PORT, EDGE_HTTPS_PORT, GATEWAY_UPSTREAMS
from services.gateway.bundle import CONFIG, DESCRIPTORS, DOCS, OPENAPI
from services.gateway.certs import generate_self_signed
from services.gateway.deployments import (
    CONCURRENCY,
    DEPLOYMENTS,
    GRPC_PORTS,
    HTTPS_PORT,
    METRICS_PORT,
    MOUNT,
    TLS_MOUNT,
    UPSTREAM_TLS_MOUNT,
    stale_files,
)
from services.gateway.envoy_binary import EnvoyNotFound, envoy_args, envoy_binary, validate_config
from tests.deploy.conftest import run
from tests.deploy.test_kubernetes import of_kind

BY_NAME = {d.name: d for d in DEPLOYMENTS}
FILES = (CONFIG, DESCRIPTORS, OPENAPI, DOCS)
ARGS = envoy_args(MOUNT / CONFIG, concurrency=CONCURRENCY)


@pytest.fixture(scope="module")
def envoy() -> Path:
    try:
        return envoy_binary()
    except EnvoyNotFound as exc:
        pytest.fail(f"envoy is not installed (`make setup` installs it): {exc}")


def localised(deployment: str, folder: Path) -> Path:
    """The committed bundle with its container paths pointed at a copy here: validation loads
    the descriptor set, the served files and the certificate."""
    for name in FILES:
        shutil.copy(BY_NAME[deployment].folder / name, folder / name)
    generate_self_signed(folder)
    upstream = generate_self_signed(folder / "upstream")  # stands in for the internal CA's
    shutil.copy(upstream.cert, folder / "upstream" / "ca.crt")
    text = (folder / CONFIG).read_text()
    text = text.replace(str(MOUNT) + "/", str(folder) + "/").replace(str(TLS_MOUNT) + "/",
                                                                     str(folder) + "/")
    text = text.replace(str(UPSTREAM_TLS_MOUNT) + "/", str(folder / "upstream") + "/")
    (folder / CONFIG).write_text(text)
    return folder / CONFIG


def validate(document: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "variant.json"
    path.write_text(json.dumps(document))
    return validate_config(path)


def test_bundles_are_what_the_generator_makes_today() -> None:
    for deployment in DEPLOYMENTS:
        assert stale_files(deployment) == [], (
            "stale: run `python -m services.gateway deployments`")


def test_a_changed_bundle_is_reported_stale(tmp_path: Path, monkeypatch: Any) -> None:
    from dataclasses import replace

    for name in FILES:
        shutil.copy(BY_NAME["k8s"].folder / name, tmp_path / name)
    document = json.loads((tmp_path / CONFIG).read_text())
    document["admin"]["address"]["socket_address"]["port_value"] += 1
    (tmp_path / CONFIG).write_text(json.dumps(document))
    moved = replace(BY_NAME["k8s"], folder=tmp_path)
    monkeypatch.setattr("services.gateway.deployments.ROOT", tmp_path)
    assert stale_files(moved) == [CONFIG]


@pytest.mark.parametrize("deployment", BY_NAME)
def test_envoy_validates_the_bundle(deployment: str, envoy: Path, tmp_path: Path) -> None:
    result = validate_config(localised(deployment, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_rejects_a_broken_bundle(envoy: Path, tmp_path: Path) -> None:
    config = json.loads(localised("k8s", tmp_path).read_text())
    breakages: dict[str, dict[str, Any]] = {}
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"][0]["lb_policy"] = "ROUND_ROBIN_PLEASE"
    breakages["unknown enum value"] = broken
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"][0]["type"] = "STATIC"  # a DNS name is no IP
    breakages["STATIC with a host name"] = broken
    broken = copy.deepcopy(config)
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["stat_prefx"] = "gateway"
    breakages["misspelt field"] = broken
    for what, variant in breakages.items():
        assert validate(variant, tmp_path).returncode != 0, f"{what} was accepted"


def test_images_run_the_envoy_version_that_validated(envoy: Path, compose: dict[str, Any],
                                                     objects: dict[str, list[Any]]) -> None:
    version = re.search(r"/(\d+\.\d+\.\d+)/", run([str(envoy), "--version"]).stdout)
    assert version, "envoy --version"
    expected = f"envoyproxy/envoy:distroless-v{version.group(1)}"
    assert compose["services"]["edge"]["image"] == expected
    for overlay, objs in objects.items():
        container = of_kind(objs, "Deployment")["edge"]["spec"]["template"]["spec"][
            "containers"][0]
        assert container["image"] == expected, overlay


def test_bundles_reach_every_service_by_dns_on_its_grpc_port() -> None:
    assert set(GRPC_PORTS) == set(GATEWAY_UPSTREAMS)
    by_component = {c.name: c for c in COMPONENTS}
    for deployment in DEPLOYMENTS:
        config = json.loads((deployment.folder / CONFIG).read_text())
        listeners = {x["name"]: x["address"]["socket_address"]
                     for x in config["static_resources"]["listeners"]}
        assert listeners["https"] == {"address": "0.0.0.0", "port_value": HTTPS_PORT}
        assert listeners["metrics"]["port_value"] == METRICS_PORT
        assert config["admin"]["address"]["socket_address"] == {
            "address": "127.0.0.1", "port_value": EDGE_ADMIN_PORT}
        assert HTTPS_PORT == EDGE_HTTPS_PORT
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        for name, port in GRPC_PORTS.items():
            assert port == by_component[name].grpc_port
            (endpoint,) = clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            address = endpoint["endpoint"]["address"]["socket_address"]
            assert address == {"address": name + deployment.dns_suffix, "port_value": port}
            assert clusters[name]["type"] == "STRICT_DNS"


def test_compose_mounts_the_bundle_and_runs_envoy_with_make_runs_flags(
    compose: dict[str, Any]
) -> None:
    edge = compose["services"]["edge"]
    assert edge["command"] == ARGS
    assert f"./deploy/compose/gateway:{MOUNT}:ro" in edge["volumes"]
    assert f"./deploy/compose/tls:{TLS_MOUNT}:ro" in edge["volumes"]
    assert set(edge["depends_on"]) == set(GRPC_PORTS)
    assert "gateway" not in compose["services"]
    for name in GRPC_PORTS:
        assert compose["services"][name]["deploy"]["replicas"] >= 2


def test_k8s_mounts_the_bundle_and_runs_envoy_with_make_runs_flags(
    objects: dict[str, list[Any]]
) -> None:
    for overlay, objs in objects.items():
        pod = of_kind(objs, "Deployment")["edge"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ARGS, overlay
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["bundle"] == str(MOUNT) and mounts["tls"] == str(TLS_MOUNT)
        configmap = of_kind(objs, "ConfigMap")[volumes["bundle"]["configMap"]["name"]]
        folder = BY_NAME["k8s"].folder
        for name in (CONFIG, OPENAPI, DOCS):
            assert configmap["data"][name] == (folder / name).read_text(), (overlay, name)
        import base64

        assert base64.b64decode(configmap["binaryData"][DESCRIPTORS]) == (
            folder / DESCRIPTORS).read_bytes()
        assert volumes["tls"]["secret"]["secretName"] == "edge-tls"
        services = of_kind(objs, "Service")
        for name, port in GRPC_PORTS.items():
            headless = services[name + BY_NAME["k8s"].dns_suffix]["spec"]
            assert headless["clusterIP"] == "None", "Envoy must see every pod"
            assert headless["ports"][0]["port"] == port
        assert not [n for n in of_kind(objs, "Deployment") if n == "gateway"]
