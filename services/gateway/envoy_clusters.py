"""One upstream cluster per gRPC service: HTTP/2, round robin per request, active gRPC health
checks, outlier detection and circuit breakers.

Where the replicas are is the deployment's business: fixed host:port pairs locally (`make run`,
tests), or one DNS name that resolves to every replica (a Kubernetes headless Service, a compose
service name), re-resolved every few seconds (STRICT_DNS).

With `UpstreamTls` the link is TLS, health checks included: each replica's certificate must
chain to the internal CA and name the upstream's host, and Envoy presents its own certificate
(the services require one: mTLS, shared/grpc_tls.py). Compose and Kubernetes use it; `make run`
stays plaintext on 127.0.0.1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class UpstreamTls:
    """Files as Envoy sees them (a mounted Secret: cert-manager's ca.crt, tls.crt, tls.key)."""

    ca_file: Path  # verifies the services' certificates
    cert_file: Path | None = None  # Envoy's client certificate (mTLS)
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("upstream TLS: a client certificate needs its key and vice versa")


@dataclass(frozen=True)
class Upstream:
    name: str  # the cluster: "account" for bank.v1.AccountService
    endpoints: tuple[tuple[str, int], ...]
    # True: each endpoint's host is a DNS name standing for every replica (STRICT_DNS).
    dns: bool = False

    @classmethod
    def parse(cls, text: str, *, dns: bool = False) -> Upstream:
        """`account=127.0.0.1:7051,127.0.0.1:7061` (the CLI's --upstream)."""
        name, sep, addresses = text.partition("=")
        if not sep or not name or not addresses:
            raise ValueError(f"upstream {text!r} is not NAME=HOST:PORT[,HOST:PORT...]")
        endpoints = []
        for address in addresses.split(","):
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"upstream {name}: {address!r} is not HOST:PORT")
            endpoints.append((host, int(port)))
        return cls(name, tuple(endpoints), dns)


def cluster_name(service_full_name: str) -> str:
    """bank.v1.AccountService -> account."""
    short = service_full_name.rsplit(".", 1)[-1].removesuffix("Service")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", short).lower()


@dataclass(frozen=True)
class ClusterPolicy:
    health_check_interval_s: float = 1.0
    connect_timeout_s: float = 1.0
    dns_refresh_s: float = 5.0
    tls: UpstreamTls | None = None  # None: plaintext (make run on 127.0.0.1)


def clusters(upstreams: Sequence[Upstream], policy: ClusterPolicy) -> list[dict[str, Any]]:
    return [_cluster(upstream, policy) for upstream in upstreams]


def _cluster(upstream: Upstream, policy: ClusterPolicy) -> dict[str, Any]:
    if not upstream.endpoints:
        raise ValueError(f"upstream {upstream.name} has no endpoint")
    interval = _seconds(policy.health_check_interval_s)
    cluster: dict[str, Any] = {
        "name": upstream.name,
        "type": "STRICT_DNS" if upstream.dns else "STATIC",
        "connect_timeout": _seconds(policy.connect_timeout_s),
        # Per request: HTTP/2 carries every request on one connection, so balancing per
        # connection (a Kubernetes Service) would pin a replica's whole share to one pod.
        "lb_policy": "ROUND_ROBIN",
        # Health changes reach the balancer at once instead of being merged over a second.
        "common_lb_config": {"update_merge_window": "0s"},
        "load_assignment": {"cluster_name": upstream.name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            for host, port in upstream.endpoints
        ]}]},
        "health_checks": [{
            "timeout": "1s",
            "interval": interval,
            # Keep checking without traffic too, so a replica's return (or loss) is seen at once.
            "no_traffic_interval": interval,
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            # "": the whole server, SERVING once PostgreSQL answers (shared/grpc_server.py).
            "grpc_health_check": {"service_name": ""},
        }],
        "outlier_detection": {
            # Only failures that say the replica is sick: connect errors and UNAVAILABLE /
            # DEADLINE_EXCEEDED (gateway errors). An application error (INTERNAL on one bad
            # request) must not eject a healthy replica.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "consecutive_gateway_failure": 5,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
        },
        "circuit_breakers": {"thresholds": [{
            "max_connections": 1024,
            "max_pending_requests": 1024,
            "max_requests": 4096,
            "max_retries": 64,
            # Retries never add more than a fifth to the load (a retry storm on an outage).
            "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 8},
        }]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {
                    "max_concurrent_streams": 1000,
                    # Finds a dead connection (a vanished pod) in seconds, not minutes.
                    "connection_keepalive": {"interval": "20s", "timeout": "5s"},
                }},
                # Below the services' max-connection-age (300 s): Envoy moves to a fresh
                # connection, and so to DNS changes, on its own schedule.
                "common_http_protocol_options": {"idle_timeout": "60s",
                                                 "max_connection_duration": "240s"},
            },
        },
    }
    if policy.tls is not None:
        cluster["transport_socket"] = _tls_socket(upstream, policy.tls)
    if upstream.dns:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        cluster["dns_refresh_rate"] = _seconds(policy.dns_refresh_s)
        cluster["respect_dns_ttl"] = True
    return cluster


def server_name(upstream: Upstream) -> str:
    """The name a replica's certificate must carry and Envoy sends as SNI: the DNS name that
    stands for the replicas ("account", "account-headless"), else the upstream's name."""
    return upstream.endpoints[0][0] if upstream.dns else upstream.name


def _tls_socket(upstream: Upstream, tls: UpstreamTls) -> dict[str, Any]:
    name = server_name(upstream)
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                       "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": str(tls.ca_file)},
            "match_typed_subject_alt_names": [{"san_type": "DNS",
                                               "matcher": {"exact": name}}],
        },
    }
    if tls.cert_file is not None and tls.key_file is not None:
        common["tls_certificates"] = [{"certificate_chain": {"filename": str(tls.cert_file)},
                                       "private_key": {"filename": str(tls.key_file)}}]
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _UPSTREAM_TLS, "sni": name, "common_tls_context": common}}


def _seconds(value: float) -> str:
    return f"{value:g}s"
