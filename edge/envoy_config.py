"""The Envoy bootstrap for the edge, generated from settings: an HTTPS listener (TLS with the
given certificate, HTTP/2 and HTTP/1.1), one upstream cluster of gateway replicas balanced per
request (round robin over HTTP/1.1 connection pools), active health checks on /healthz,
timeouts, and retries only where the request never reached a gateway.

The output is plain JSON (Envoy reads .json bootstraps natively), so no YAML library is needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager")
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class EdgeSpec:
    host: str  # where Envoy listens (127.0.0.1 locally)
    https_port: int
    admin_port: int
    gateways: Sequence[tuple[str, int]]  # gateway replicas (host, port)
    cert_file: Path
    key_file: Path
    # A route's whole-request timeout: the gateway's gRPC deadline plus room for its own work.
    request_timeout_s: float = 7.0
    health_check_interval_s: float = 1.0


def _seconds(value: float) -> str:
    return f"{value:g}s"


def build_envoy_config(spec: EdgeSpec) -> dict[str, Any]:
    if not spec.gateways:
        raise ValueError("the edge needs at least one gateway replica")
    return {
        "node": {"id": "edge", "cluster": "edge"},
        "admin": {"address": _address(spec.host, spec.admin_port)},
        "static_resources": {
            "listeners": [_https_listener(spec)],
            "clusters": [_gateway_cluster(spec)],
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _https_listener(spec: EdgeSpec) -> dict[str, Any]:
    return {
        "name": "https",
        "address": _address(spec.host, spec.https_port),
        "per_connection_buffer_limit_bytes": 65536,
        "filter_chains": [{
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": _TLS,
                    "common_tls_context": {
                        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                        "alpn_protocols": ["h2", "http/1.1"],
                        "tls_certificates": [{
                            "certificate_chain": {"filename": str(spec.cert_file)},
                            "private_key": {"filename": str(spec.key_file)},
                        }],
                    },
                },
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": _connection_manager(spec),
            }],
        }],
    }


def _connection_manager(spec: EdgeSpec) -> dict[str, Any]:
    return {
        "@type": _HCM,
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        # Envoy is the first hop: it appends the TCP peer to X-Forwarded-For, and the gateway
        # trusts exactly that one entry (settings.gateway_trusted_hops = 1).
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # Keep a client's x-request-id (the gateway validates it) and echo the id back.
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "request_headers_timeout": "10s",
        "stream_idle_timeout": "30s",
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        "http2_protocol_options": {"max_concurrent_streams": 256},
        "route_config": {
            "name": "gateway",
            "virtual_hosts": [{
                "name": "gateway",
                "domains": ["*"],
                "routes": [
                    # Metrics are for the in-cluster scraper, not for the internet.
                    {"match": {"path": "/metrics"}, "direct_response": {"status": 404}},
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": "gateway",
                            "timeout": _seconds(spec.request_timeout_s),
                            # Safe for any method: the request never reached a gateway.
                            "retry_policy": {
                                "retry_on": "connect-failure,refused-stream,reset-before-request",
                                "num_retries": 2,
                            },
                        },
                    },
                ],
            }],
        },
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": _ROUTER}}],
    }


def _gateway_cluster(spec: EdgeSpec) -> dict[str, Any]:
    interval = _seconds(spec.health_check_interval_s)
    return {
        "name": "gateway",
        "type": "STATIC",
        "connect_timeout": "1s",
        # Per request: each request on a downstream connection picks the next healthy replica.
        "lb_policy": "ROUND_ROBIN",
        # Health changes reach the balancer at once, instead of being merged over 1 s.
        "common_lb_config": {"update_merge_window": "0s"},
        "load_assignment": {
            "cluster_name": "gateway",
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _address(host, port)}} for host, port in spec.gateways
            ]}],
        },
        "health_checks": [{
            "timeout": "0.5s",
            "interval": interval,
            # Without traffic Envoy would check only once a minute; keep checking every interval
            # so a replica that comes back (or goes away) is seen at once.
            "no_traffic_interval": interval,
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"},
        }],
        "circuit_breakers": {"thresholds": [{
            "max_connections": 4096, "max_pending_requests": 4096, "max_requests": 4096,
        }]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                # Below uvicorn's keep-alive (75 s), so Envoy never reuses a closing connection.
                "common_http_protocol_options": {"idle_timeout": "60s"},
                "explicit_http_config": {"http_protocol_options": {}},
            },
        },
    }


def write_config(spec: EdgeSpec, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_envoy_config(spec), indent=2) + "\n")
    return path
