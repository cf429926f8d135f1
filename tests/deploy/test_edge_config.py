"""The Envoy edge in both deployments: its configuration is what the edge tool (the one `make
run` uses) generates today, `envoy --mode validate` accepts it, a broken one is rejected, and the
manifests mount it where Envoy is told to read it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.components import COMPONENTS, EDGE_HTTPS_PORT
from edge.binary import EnvoyNotFound, envoy_binary, validate_config
from edge.certs import generate_self_signed
from tests.deploy.conftest import ROOT, run
from tests.deploy.test_kubernetes import of_kind

COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "envoy.json"
K8S_CONFIG = ROOT / "deploy" / "k8s" / "base" / "edge" / "envoy.json"
CONFIGS = {"compose": COMPOSE_CONFIG, "k8s": K8S_CONFIG}
GATEWAY_PORT = next(c.http_port for c in COMPONENTS if c.name == "gateway")


@pytest.fixture(scope="module")
def envoy() -> Path:
    try:
        return envoy_binary()
    except EnvoyNotFound as exc:
        pytest.skip(f"envoy is not installed, so `envoy --mode validate` cannot run: {exc}")


def with_local_certificate(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The same config with the certificate files made here: validation loads the files, and
    the deployments' paths (/etc/envoy/tls, a mounted Secret) exist only in the containers."""
    cert = generate_self_signed(folder)
    local = copy.deepcopy(config)
    for listener in local["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            tls = chain["transport_socket"]["typed_config"]["common_tls_context"]
            for pair in tls["tls_certificates"]:
                assert pair["certificate_chain"]["filename"] == "/etc/envoy/tls/tls.crt"
                assert pair["private_key"]["filename"] == "/etc/envoy/tls/tls.key"
                pair["certificate_chain"]["filename"] = str(cert.cert)
                pair["private_key"]["filename"] = str(cert.key)
    return local


def envoy_validate(config: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "envoy.json"
    path.write_text(json.dumps(with_local_certificate(config, folder)))
    return validate_config(path)


def test_configs_are_what_the_edge_tool_generates() -> None:
    result = run([sys.executable, "scripts/render_edge_configs.py", "--check"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("deployment", CONFIGS)
def test_envoy_validates_the_config(deployment: str, envoy: Path, tmp_path: Path) -> None:
    result = envoy_validate(json.loads(CONFIGS[deployment].read_text()), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_rejects_a_broken_config(envoy: Path, tmp_path: Path) -> None:
    config = json.loads(K8S_CONFIG.read_text())
    breakages: dict[str, dict[str, Any]] = {}
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"][0]["lb_policy"] = "ROUND_ROBIN_PLEASE"
    breakages["unknown enum value"] = broken
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"][0]["type"] = "STATIC"  # a DNS name is no IP
    breakages["STATIC with a host name"] = broken
    broken = copy.deepcopy(config)
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["stat_prefx"] = "edge"
    breakages["misspelt field"] = broken
    for what, config_variant in breakages.items():
        result = envoy_validate(config_variant, tmp_path)
        assert result.returncode != 0, f"{what} was accepted"


def test_images_run_the_envoy_version_that_validated(envoy: Path,
                                                     compose: dict[str, Any],
                                                     objects: dict[str, list[Any]]) -> None:
    version = re.search(r"/(\d+\.\d+\.\d+)/", run([str(envoy), "--version"]).stdout)
    assert version, "envoy --version"
    expected = f"envoyproxy/envoy:distroless-v{version.group(1)}"
    assert compose["services"]["edge"]["image"] == expected
    for overlay, objs in objects.items():
        container = of_kind(objs, "Deployment")["edge"]["spec"]["template"]["spec"][
            "containers"][0]
        assert container["image"] == expected, overlay


def _listener_and_upstream(config: dict[str, Any]) -> tuple[int, tuple[str, int], str]:
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    (cluster,) = config["static_resources"]["clusters"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    upstream = endpoint["endpoint"]["address"]["socket_address"]
    return listener["port_value"], (upstream["address"], upstream["port_value"]), cluster["type"]


def test_compose_mounts_its_config_and_reaches_the_gateways(compose: dict[str, Any]) -> None:
    edge = compose["services"]["edge"]
    config_path = edge["command"][edge["command"].index("-c") + 1]
    assert f"./deploy/compose/envoy.json:{config_path}:ro" in edge["volumes"]
    assert "./deploy/compose/tls:/etc/envoy/tls:ro" in edge["volumes"]
    port, upstream, kind = _listener_and_upstream(json.loads(COMPOSE_CONFIG.read_text()))
    assert port == EDGE_HTTPS_PORT
    assert upstream == ("gateway", GATEWAY_PORT) and "gateway" in compose["services"]
    assert kind == "STRICT_DNS"


def test_k8s_mounts_its_config_and_reaches_the_gateways(objects: dict[str, list[Any]]) -> None:
    for overlay, objs in objects.items():
        pod = of_kind(objs, "Deployment")["edge"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        config_path = Path(container["args"][container["args"].index("-c") + 1])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["config"] == str(config_path.parent)
        configmap = of_kind(objs, "ConfigMap")[volumes["config"]["configMap"]["name"]]
        assert configmap["data"][config_path.name] == K8S_CONFIG.read_text(), overlay
        assert mounts["tls"] == "/etc/envoy/tls"
        assert volumes["tls"]["secret"]["secretName"] == "edge-tls"
        port, upstream, kind = _listener_and_upstream(json.loads(K8S_CONFIG.read_text()))
        assert port == EDGE_HTTPS_PORT
        service = of_kind(objs, "Service")[upstream[0]]
        assert service["spec"]["clusterIP"] == "None", "Envoy must see every gateway pod"
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": "gateway"}
        assert upstream[1] == GATEWAY_PORT == service["spec"]["ports"][0]["port"]
        assert kind == "STRICT_DNS"
