"""The edge: the generated Envoy config passes `envoy --mode validate` (and broken ones fail),
and a real Envoy terminates HTTPS and balances requests over two gateway replicas, dropping one
that stops answering its health check."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.ports import free_ports
from edge import build_envoy_config, certificate_path, validate_config, write_edge_config
from edge.runner import EnvoyProcess
from services.gateway.bootstrap import serve_gateway
from services.gateway.fakes import FakeBankServer
from shared.config import Settings

pytestmark = pytest.mark.integration


def test_generated_config_passes_envoy_validate(tmp_path: Path) -> None:
    config = write_edge_config(tmp_path, 18443, 19901, [18081, 18082])
    result = validate_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    document = json.loads(config.read_text())
    cluster = document["static_resources"]["clusters"][0]
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    assert len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
    listener = document["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    assert (tmp_path / "edge-key.pem").stat().st_mode & 0o077 == 0  # the key is private


def _broken(config: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(config)
    resources = broken["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if how == "route to a cluster that does not exist":
        hcm["route_config"]["virtual_hosts"][0]["routes"][1]["route"]["cluster"] = "nowhere"
    elif how == "unknown load balancing policy":
        resources["clusters"][0]["lb_policy"] = "ROUND_AND_ROUND"
    elif how == "certificate file missing":
        tls = resources["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] = (
            "/nonexistent/cert.pem")
    elif how == "unknown field":
        resources["clusters"][0]["connect_timeout_typo"] = "1s"
    return broken


@pytest.mark.parametrize("how", ["route to a cluster that does not exist",
                                 "unknown load balancing policy", "certificate file missing",
                                 "unknown field"])
def test_broken_config_fails_envoy_validate(tmp_path: Path, how: str) -> None:
    config = write_edge_config(tmp_path, 18443, 19901, [18081])
    document = _broken(json.loads(config.read_text()), how)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    result = validate_config(broken)
    assert result.returncode != 0, f"{how}: envoy accepted it"


def test_config_needs_a_gateway() -> None:
    from edge import EdgeSpec

    with pytest.raises(ValueError):
        build_envoy_config(EdgeSpec("127.0.0.1", 1, 2, [], Path("c"), Path("k")))


async def test_envoy_terminates_https_and_balances_per_request(
    tmp_path: Path, base_settings: Settings, fake_bank: FakeBankServer,
    unique: Callable[[str], str]
) -> None:
    settings = dataclasses.replace(base_settings, rate_limit_per_minute=10_000)
    async with serve_gateway(settings, targets=fake_bank.targets()) as one, \
            serve_gateway(settings, targets=fake_bank.targets()) as two:
        https_port, admin_port = free_ports(2)
        config = write_edge_config(tmp_path, https_port, admin_port, [one.port, two.port],
                                   settings=settings)
        async with EnvoyProcess(config, admin_port, tmp_path / "envoy.log") as envoy:
            await envoy.healthy(2)
            tls = ssl.create_default_context(cafile=str(certificate_path(tmp_path)))
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{https_port}",
                                         verify=tls, timeout=10) as http:
                before = [one.server.server_state.total_requests,
                          two.server.server_state.total_requests]
                # One keep-alive connection: balancing must still alternate per request.
                replies = [await http.post("/v1/auth/login", json={"email": "e@example.com"},
                                           headers={"X-Forwarded-For": "6.6.6.6"})
                           for _ in range(20)]
                after = [one.server.server_state.total_requests,
                         two.server.server_state.total_requests]
                assert all(r.status_code == 200 for r in replies), replies[-1].text
                served = [a - b for a, b in zip(after, before, strict=True)]
                assert min(served) >= 8, served  # ~10 each (+ health checks)
                _, _, metadata = fake_bank.received[-1]
                # Envoy appended the peer (for a loopback peer, Envoy writes the machine's own
                # address); the entry the client wrote itself is not trusted.
                assert metadata["x-forwarded-for"] != "6.6.6.6"
                ipaddress.ip_address(metadata["x-forwarded-for"])
                assert replies[-1].headers["x-request-id"]
                assert (await http.get("/metrics")).status_code == 404
                assert (await http.get("/healthz")).json() == {"status": "ok"}

                await two.stop()
                await envoy.healthy(1)
                statuses = [(await http.get("/healthz")).status_code for _ in range(10)]
                assert statuses == [200] * 10


def test_start_edge_for_make_run(tmp_path: Path) -> None:
    from edge.launch import start_edge

    https_port, admin_port, gateway_port = free_ports(3)
    proc, url = start_edge(tmp_path, https_port, admin_port, [gateway_port])
    try:
        assert proc.alive and url == f"https://127.0.0.1:{https_port}"
        tls = ssl.create_default_context(cafile=str(certificate_path(tmp_path)))
        with httpx.Client(verify=tls) as http:
            # No gateway listens: Envoy itself answers, over verified TLS.
            assert http.get(url + "/healthz").status_code == 503
    finally:
        proc.stop()
    assert not proc.alive
