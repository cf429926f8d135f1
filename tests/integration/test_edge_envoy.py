"""The generated Envoy bootstrap: `envoy --mode validate` accepts it and rejects broken variants;
a real Envoy balances every request over the replicas, takes a NOT_SERVING replica out, and
answers for the services when none is left; `make run`'s start path."""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from bank.v1 import account_pb2
from google.protobuf.message import Message

from devstack.launcher import start_edge
from devstack.ports import free_ports
from services.gateway.bundle import render_local
from services.gateway.descriptors import load_catalog
from services.gateway.envoy_binary import validate_config
from services.gateway.envoy_clusters import Upstream
from tests.support.fake_bank import FakeBankServer
from tests.support.gateway import SERVICES, gateway_settings, running_gateway

pytestmark = pytest.mark.integration

BALANCE = "/bank.v1.AccountService/GetBalance"


def local_upstreams(*ports: int) -> list[Upstream]:
    return [Upstream(name, tuple(("127.0.0.1", port) for port in ports)) for name in SERVICES]


def render(folder: Path) -> Path:
    return render_local(folder, gateway_settings(), local_upstreams(18051, 18061),
                        https_port=18443, admin_port=19901)


def test_generated_config_passes_envoy_validate(tmp_path: Path) -> None:
    config = render(tmp_path)
    result = validate_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(config.read_text())
    assert document["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    monitors = document["overload_manager"]["resource_monitors"]
    assert monitors[0]["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    clusters = {c["name"]: c for c in document["static_resources"]["clusters"]}
    assert set(clusters) == set(SERVICES)
    for cluster in clusters.values():
        assert cluster["lb_policy"] == "ROUND_ROBIN"
        assert cluster["health_checks"][0]["grpc_health_check"] == {"service_name": ""}
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]
        assert len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
    (listener,) = document["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0  # the key is private


def _hcm(document: dict[str, Any]) -> dict[str, Any]:
    listener = document["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _broken(config: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(config)
    resources = broken["static_resources"]
    hcm = _hcm(broken)
    transcoder = hcm["http_filters"][-2]["typed_config"]
    if how == "route to a cluster that does not exist":
        route = next(r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "route" in r)
        route["route"]["cluster"] = "nowhere"
    elif how == "unknown load balancing policy":
        resources["clusters"][0]["lb_policy"] = "ROUND_AND_ROUND"
    elif how == "certificate file missing":
        tls = resources["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] = (
            "/nonexistent/cert.pem")
    elif how == "unknown field":
        resources["clusters"][0]["connect_timeout_typo"] = "1s"
    elif how == "transcoding a service the descriptors lack":
        transcoder["services"].append("bank.v1.NoSuchService")
    elif how == "descriptor set missing":
        transcoder["proto_descriptor"] = "/nonexistent/descriptors.pb"
    return broken


@pytest.mark.parametrize("how", [
    "route to a cluster that does not exist", "unknown load balancing policy",
    "certificate file missing", "unknown field", "transcoding a service the descriptors lack",
    "descriptor set missing",
])
def test_broken_config_fails_envoy_validate(tmp_path: Path, how: str) -> None:
    document = _broken(json.loads(render(tmp_path).read_text()), how)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    result = validate_config(broken)
    assert result.returncode != 0, f"{how}: envoy accepted it"


def test_every_service_needs_an_upstream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no upstream given"):
        render_local(tmp_path, gateway_settings(), local_upstreams(18051)[:2],
                     https_port=18443, admin_port=19901)


async def test_requests_alternate_over_the_replicas_on_one_connection(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway, gateway.client(http2=True) as http:
        replies = [await http.get("/v1/accounts/a/balance") for _ in range(20)]
        assert all(r.status_code == 200 for r in replies), replies[-1].text
        served = Counter(call.replica for call in gateway.calls(BALANCE))
        assert served == {"replica-0": 10, "replica-1": 10}


async def test_a_not_serving_replica_is_taken_out(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway, gateway.client() as http:
        first, second = gateway.replicas
        await second.set_serving(False)
        await gateway.envoy.healthy("account", 1)
        gateway.reset()
        statuses = [(await http.get("/v1/accounts/a/balance")).status_code for _ in range(10)]
        assert statuses == [200] * 10
        assert {call.replica for call in gateway.calls(BALANCE)} == {first.name}

        # None serving (PostgreSQL is down for all): Envoy's panic mode sends to every replica,
        # so that reads the cache can answer still work. Nothing listening at all is a 503.
        await first.set_serving(False)
        await gateway.envoy.healthy("account", 0)
        assert (await http.get("/v1/accounts/a/balance")).status_code == 200
        for replica in gateway.replicas:
            await replica.stop()
        refused = await http.get("/v1/accounts/a/balance")
        assert refused.status_code == 503
        body = refused.json()
        assert body["code"] == 14 and body["details"] == []
        assert body["message"].startswith("the service is temporarily unavailable")
        assert refused.headers["x-request-id"] in body["message"]
        assert "127.0.0.1" not in refused.text  # no upstream address in the answer


async def test_a_call_past_the_deadline_is_504(tmp_path: Path) -> None:
    async def slow(request: Message, context: grpc.aio.ServicerContext) -> Message:
        await asyncio.sleep(3)
        return account_pb2.Balance()

    settings = gateway_settings(grpc_deadline_s=0.5)
    async with running_gateway(tmp_path, settings=settings) as gateway, gateway.client() as http:
        gateway.behaviours[BALANCE] = slow
        reply = await http.get("/v1/accounts/a/balance")
    assert reply.status_code == 504
    assert reply.json()["code"] == 4
    assert len(gateway.calls(BALANCE)) == 1  # a timed-out read is not retried


async def test_start_edge_for_make_run(tmp_path: Path) -> None:
    replica = FakeBankServer(load_catalog())
    await replica.start()
    try:
        https_port, admin_port = free_ports(2)
        # In a thread: the fake replica in this event loop must answer the health checks.
        envoy = await asyncio.to_thread(start_edge, tmp_path, local_upstreams(replica.port),
                                        https_port, admin_port)
        try:
            assert envoy.alive and all(envoy.healthy_hosts(n) == 1 for n in SERVICES)
            tls = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
            async with httpx.AsyncClient(verify=tls) as http:
                reply = await http.get(f"https://127.0.0.1:{https_port}/v1/accounts")
            assert reply.status_code == 200, reply.text
        finally:
            envoy.stop()
        assert not envoy.alive
    finally:
        await replica.stop()
