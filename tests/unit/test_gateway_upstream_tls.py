"""Envoy's links to the services: TLS with a client certificate (mTLS) when the deployment
configures it, in the rendered bootstrap and accepted by `envoy --mode validate`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from services.gateway.bundle import render_local
from services.gateway.certs import generate_self_signed
from services.gateway.envoy_binary import EnvoyNotFound, envoy_binary, validate_config
from services.gateway.envoy_clusters import ClusterPolicy, Upstream, UpstreamTls, clusters
from shared.config import Settings

UPSTREAMS = [Upstream("account", (("account-headless", 7051),), dns=True),
             Upstream("transfer", (("127.0.0.1", 7052), ("127.0.0.1", 7062)))]


def tls_of(cluster: dict[str, Any]) -> dict[str, Any]:
    socket = cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    return dict(socket["typed_config"])


def test_without_tls_the_links_are_plaintext() -> None:
    for cluster in clusters(UPSTREAMS, ClusterPolicy()):
        assert "transport_socket" not in cluster


def test_with_tls_every_cluster_verifies_the_service_and_presents_a_certificate() -> None:
    tls = UpstreamTls(Path("/tls/ca.crt"), Path("/tls/tls.crt"), Path("/tls/tls.key"))
    account, transfer = clusters(UPSTREAMS, ClusterPolicy(tls=tls))
    context = tls_of(account)
    assert context["@type"].endswith("UpstreamTlsContext")
    # The DNS name that stands for the replicas is what their certificates carry (and SNI).
    assert context["sni"] == "account-headless"
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert common["validation_context"]["trusted_ca"] == {"filename": "/tls/ca.crt"}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "account-headless"}}]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": "/tls/tls.crt"},
                                           "private_key": {"filename": "/tls/tls.key"}}]
    assert tls_of(transfer)["sni"] == "transfer"  # fixed addresses: the upstream's name
    assert account["health_checks"][0]["grpc_health_check"] == {"service_name": ""}


def test_server_verification_without_a_client_certificate() -> None:
    (account, _) = clusters(UPSTREAMS, ClusterPolicy(tls=UpstreamTls(Path("/tls/ca.crt"))))
    assert "tls_certificates" not in tls_of(account)["common_tls_context"]
    with pytest.raises(ValueError, match="needs its key"):
        UpstreamTls(Path("/ca.crt"), cert_file=Path("/tls.crt"))


def test_envoy_validates_a_bundle_with_upstream_tls(tmp_path: Path) -> None:
    try:
        envoy_binary()
    except EnvoyNotFound as exc:
        pytest.fail(f"envoy is not installed (`make setup` installs it): {exc}")
    internal = generate_self_signed(tmp_path / "internal", hosts=("account",))
    shutil.copy(internal.cert, tmp_path / "internal" / "ca.crt")
    tls = UpstreamTls(tmp_path / "internal" / "ca.crt", internal.cert, internal.key)
    config = render_local(tmp_path / "bundle", Settings(database_url="", redis_nodes=""),
                          [Upstream(name, (("127.0.0.1", port),)) for name, port in
                           (("account", 7051), ("transfer", 7052), ("auth", 7053))],
                          cluster_policy=ClusterPolicy(tls=tls))
    assert "UpstreamTlsContext" in config.read_text()
    result = validate_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    # A CA file that is not there is refused.
    broken = config.read_text().replace(str(tmp_path / "internal" / "ca.crt"), "/nowhere/ca.crt")
    config.write_text(broken)
    assert validate_config(config).returncode != 0
