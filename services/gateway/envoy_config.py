"""The gateway's Envoy bootstrap (JSON), generated from the compiled descriptors and settings.

One tier: an HTTPS listener (TLS 1.2 with ECDHE+AEAD suites only, or TLS 1.3; HTTP/2 and
HTTP/1.1) whose connection manager runs the gRPC-JSON transcoder and the router, the routes of
envoy_routes.py, one cluster per service (envoy_clusters.py), an admin interface on the loopback
interface, and an overload manager that caps downstream connections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.gateway.envoy_clusters import ClusterPolicy, Upstream, cluster_name, clusters
from services.gateway.envoy_routes import (
    HEADER_MUTATION,
    TRANSCODER,
    RouteFiles,
    RouteTimeouts,
    route_config,
)
from services.gateway.local_replies import local_reply_config
from services.gateway.routes import RouteTable

_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager")
_TRANSCODER = ("type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
               ".GrpcJsonTranscoder")
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
# Request headers become gRPC metadata, and a gRPC server fails a call whose metadata it cannot
# read (INTERNAL: "Illegal header key"), which would make a client's odd header a 5xx. Metadata
# keys are [0-9a-z_.-] and text values printable ASCII; "-bin" keys carry base64 and "grpc-"
# keys are the protocol's own. Client headers outside that are dropped before the call (found
# by the fuzzing test: a header named "2w$oek&").
# Request headers gRPC metadata cannot carry, removed before the request goes upstream: a name
# outside gRPC's key alphabet ([0-9a-z_.-]; grpc-python answers such a request INTERNAL, a 500),
# and the names gRPC reserves (grpc-*, *-bin). Pseudo-headers (":path") never match: the first
# alternative cannot start with ':' and the second needs a first character from the alphabet.
# One RE2 match per header in the header_mutation filter: measured ~50 us less Envoy CPU per
# request than the same rule as a Lua filter.
METADATA_UNSAFE_HEADER = r"([^:0-9a-z_.\-]|[0-9a-z_.\-].*[^0-9a-z_.\-]).*|grpc-.*|.*-bin"
_HEADER_MUTATION = ("type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3"
                    ".HeaderMutation")
# What a transcoded reply keeps of the gRPC response: its status is already the HTTP status and
# the JSON body, so these only show clients the protocol behind the API.
_GRPC_RESPONSE_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin",
                          "grpc-accept-encoding", "grpc-encoding")
_STDOUT_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
_CONNECTIONS = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections"
                ".v3.DownstreamConnectionsConfig")
# TLS 1.2 suites: forward secrecy (ECDHE) and authenticated encryption (GCM, ChaCha20) only.
# TLS 1.3's suites all qualify and are not configurable.
TLS12_CIPHER_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
# One JSON object per request on stdout; the request id ties it to the services' logs.
ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    # The REST path the client sent (the transcoder rewrites :path to the gRPC method).
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "protocol": "%PROTOCOL%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
}


@dataclass(frozen=True)
class GatewayFiles:
    """Where Envoy finds the files the bundle writes (its own folder, or a mounted one)."""

    descriptor_set: Path
    openapi: Path
    docs: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class GatewaySpec:
    listen_host: str
    https_port: int
    admin_port: int
    upstreams: Sequence[Upstream]
    files: GatewayFiles
    grpc_deadline_s: float = 5.0
    max_body_bytes: int = 64 * 1024
    # Over this many open client connections, Envoy refuses new ones.
    max_connections: int = 10_000
    # A plain-HTTP listener that only serves Prometheus stats (containers; None: not at all).
    metrics_port: int | None = None
    # Traces: Envoy starts (or continues the client's) trace of every request, exports its span
    # over OTLP/gRPC to this collector "host:port", and sends `traceparent` to the services.
    # Empty: no tracing.
    otel_collector: str = ""
    otel_sample_ratio: float = 1.0
    # Requests per minute one client address may send, whatever the route, counted by Envoy
    # before a request reaches a service (no Redis, no PostgreSQL work for a flood); 0: off.
    address_limit_per_minute: int = 3000
    cluster_policy: ClusterPolicy = field(default_factory=ClusterPolicy)


def build_bootstrap(spec: GatewaySpec, table: RouteTable) -> dict[str, Any]:
    known = {u.name for u in spec.upstreams}
    needed = {cluster_name(service) for service in table.services()}
    if needed - known:
        raise ValueError(f"no upstream given for {sorted(needed - known)}")
    listeners = [_https_listener(spec, table)]
    extra_clusters: list[dict[str, Any]] = []
    if spec.metrics_port is not None:
        listeners.append(_metrics_listener(spec))
        extra_clusters.append(_admin_cluster(spec.admin_port))
    if spec.otel_collector:
        extra_clusters.append(_collector_cluster(spec.otel_collector))
    return {
        "node": {"id": "bank-gateway", "cluster": "bank-gateway"},
        "admin": {"address": _address("127.0.0.1", spec.admin_port)},
        "overload_manager": _overload_manager(spec.max_connections),
        "static_resources": {
            "listeners": listeners,
            "clusters": [*clusters([u for u in spec.upstreams if u.name in needed],
                                   spec.cluster_policy), *extra_clusters],
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _overload_manager(max_connections: int) -> dict[str, Any]:
    return {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": _CONNECTIONS,
                         "max_active_downstream_connections": max_connections},
    }]}


def _https_listener(spec: GatewaySpec, table: RouteTable) -> dict[str, Any]:
    return {
        "name": "https",
        "address": _address(spec.listen_host, spec.https_port),
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": _TLS,
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                   "tls_maximum_protocol_version": "TLSv1_3",
                                   "cipher_suites": list(TLS12_CIPHER_SUITES)},
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": str(spec.files.cert)},
                        "private_key": {"filename": str(spec.files.key)},
                    }],
                },
            }},
            "filters": [{"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": _connection_manager(spec, table)}],
        }],
    }


def _connection_manager(spec: GatewaySpec, table: RouteTable) -> dict[str, Any]:
    timeouts = RouteTimeouts(grpc_deadline_s=spec.grpc_deadline_s,
                             route_timeout_s=spec.grpc_deadline_s + 1.0)
    manager = {
        "@type": _HCM,
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        # Envoy is the first hop: it appends the TCP peer to X-Forwarded-For, and the services
        # take the rightmost entry as the client address. Entries the client wrote are not
        # trusted (no trusted hops).
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # A sane client x-request-id is kept, a new one made otherwise, and echoed in replies.
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        # /v1//accounts/../x and the like are normalised before routing (no route bypass).
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        # No "server: envoy" on replies.
        "server_header_transformation": "PASS_THROUGH",
        # Slow or idle clients do not hold a connection and its buffers for long.
        "request_headers_timeout": "10s",
        "request_timeout": _seconds(spec.grpc_deadline_s + 10.0),
        "stream_idle_timeout": "30s",
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            # Clients reconnect now and then, so a new edge replica gets its share.
            "max_connection_duration": "900s",
            "headers_with_underscores_action": "REJECT_REQUEST",
            "max_headers_count": 100,
        },
        "http2_protocol_options": {"max_concurrent_streams": 128},
        "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": _STDOUT_LOG,
            "log_format": {"json_format": ACCESS_LOG_FORMAT},
        }}],
        "local_reply_config": local_reply_config(),
        "route_config": route_config(table, RouteFiles(spec.files.openapi, spec.files.docs),
                                     timeouts),
        "http_filters": [
            # First, so that its response side runs last: after the transcoder has copied the
            # gRPC trailers into the reply's headers.
            {"name": HEADER_MUTATION, "typed_config": {
                "@type": _HEADER_MUTATION,
                "mutations": {
                    "request_mutations": [{"remove_on_match": {"key_matcher": {
                        "safe_regex": {"regex": METADATA_UNSAFE_HEADER}}}}],
                    "response_mutations": [{"remove": name} for name in _GRPC_RESPONSE_HEADERS],
                },
            }},
            *_address_limit(spec),
            # Whole requests only, and at most max_body_bytes of them: 413 otherwise, before
            # anything is sent upstream (the transcoder alone bounds its buffer, not the body).
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": _BUFFER, "max_request_bytes": spec.max_body_bytes}},
            {"name": TRANSCODER, "typed_config": _transcoder(spec, table)},
            # No x-envoy-* headers towards the services nor timing headers towards clients.
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": _ROUTER, "suppress_envoy_headers": True}},
        ],
    }
    if spec.otel_collector:
        manager["tracing"] = _tracing(spec)
    return manager


_LOCAL_RATE_LIMIT = ("type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
                     ".LocalRateLimit")
# Distinct client addresses with a bucket at once (LRU): beyond it the least recent loses its
# count, which a flood of spoofed sources cannot use (the TCP peer is what is counted).
_ADDRESS_BUCKETS = 100_000


def _address_limit(spec: GatewaySpec) -> list[dict[str, Any]]:
    """A token bucket per client address group (the TCP peer's address, or its /64 for IPv6:
    `masked_remote_address`, as every per-address limit counts), refilled a second
    at a time: an abuse limit per Envoy replica, far above what a person or an office behind
    one address sends; the exact per-user limit is the request gate's."""
    limit = spec.address_limit_per_minute
    if limit <= 0:
        return []
    # Refilled every second when the limit allows one a second, else one every 60/limit s.
    if limit >= 60:
        bucket = {"max_tokens": limit, "tokens_per_fill": limit // 60, "fill_interval": "1s"}
    else:
        bucket = {"max_tokens": limit, "tokens_per_fill": 1,
                  "fill_interval": f"{math.ceil(60 / limit)}s"}
    return [{"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": _LOCAL_RATE_LIMIT,
        "stat_prefix": "address_limit",
        # Requests that match no descriptor (none: every request has an address) pass.
        "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000,
                         "fill_interval": "1s"},
        "always_consume_default_token_bucket": False,
        "descriptors": [{"entries": [{"key": "masked_remote_address"}],
                         "token_bucket": bucket}],
        "max_dynamic_descriptors": _ADDRESS_BUCKETS,
        "vh_rate_limits": "INCLUDE",
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                           "runtime_key": "address_limit.enabled"},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                            "runtime_key": "address_limit.enforced"},
        "response_headers_to_add": [{"header": {"key": "retry-after", "value": "1"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }}]


_OTEL_TRACER = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
_COLLECTOR_CLUSTER = "otel_collector"


def _tracing(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": _OTEL_TRACER,
            "grpc_service": {"envoy_grpc": {"cluster_name": _COLLECTOR_CLUSTER},
                             "timeout": "1s"},
            "service_name": "gateway",
        }},
        # A request with a sampled traceparent stays sampled; new traces by this share.
        "random_sampling": {"value": 100.0 * spec.otel_sample_ratio},
        "spawn_upstream_span": False,
    }


def _collector_cluster(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.removeprefix("http://").removeprefix("https://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the OTLP collector must be host:port, got {endpoint!r}")
    return {
        "name": _COLLECTOR_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": _COLLECTOR_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(host, int(port))}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                         ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    }


def _transcoder(spec: GatewaySpec, table: RouteTable) -> dict[str, Any]:
    return {
        "@type": _TRANSCODER,
        "proto_descriptor": str(spec.files.descriptor_set),
        "services": table.services(),
        # Routes match the REST request (method + path), not the gRPC path it becomes.
        "match_incoming_request_route": True,
        # gRPC errors become google.rpc.Status JSON with the standard HTTP status.
        "convert_grpc_status": True,
        # proto3 JSON as the API has always answered: lowerCamelCase names, int64 as strings,
        # enum names, every field present even at its default.
        "print_options": {"always_print_primitive_fields": True,
                          "always_print_enums_as_ints": False,
                          "preserve_proto_field_names": False},
        "request_validation_options": {"reject_unknown_method": True,
                                       "reject_unknown_query_parameters": True,
                                       "reject_binding_body_field_collisions": True},
        # Path variables are single segments ({account_id}): "%2F" is part of the value.
        "url_unescape_spec": "ALL_CHARACTERS",
        "max_request_body_size": spec.max_body_bytes,
        # Replies are small; a reply over 4 MiB is a bug, not something to pass on.
        "max_response_body_size": 4 * 1024 * 1024,
    }


def _metrics_listener(spec: GatewaySpec) -> dict[str, Any]:
    """Plain HTTP for the in-cluster Prometheus: /stats/prometheus from the admin interface,
    which itself stays on the loopback interface (it can drain or stop Envoy)."""
    assert spec.metrics_port is not None
    return {
        "name": "metrics",
        "address": _address(spec.listen_host, spec.metrics_port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _HCM,
                "stat_prefix": "metrics",
                "route_config": {"virtual_hosts": [{"name": "metrics", "domains": ["*"],
                                                    "routes": [
                    {"match": {"path": "/stats/prometheus"}, "route": {"cluster": "admin"}},
                    {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                ]}]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": _ROUTER}}],
            },
        }]}],
    }


def _admin_cluster(admin_port: int) -> dict[str, Any]:
    return {
        "name": "admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "admin", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address("127.0.0.1", admin_port)}}]}]},
    }


def _seconds(value: float) -> str:
    return f"{value:g}s"
