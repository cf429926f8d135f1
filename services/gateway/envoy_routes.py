"""The allow-list of routes, generated from the route table: nothing is written per RPC.

In order (Envoy takes the first route that matches):
  1. GET /openapi.json and GET /docs: the generated files, served by Envoy itself;
  2. per google.api.http binding: method + path regex (+ a JSON body) -> the service's cluster;
     the same method and path with a body that is not JSON -> 415;
  3. per bound path, any other method -> 405 with an Allow header;
  4. anything else -> 404.
The transcoder matches routes on the original REST request (`match_incoming_request_route`), so
a native gRPC request (`POST /bank.v1.AuthService/ValidateSession`) finds no route and never
reaches a service. Replies Envoy makes itself become google.rpc.Status JSON (local_replies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.gateway.envoy_clusters import cluster_name
from services.gateway.local_replies import SECURITY_HEADERS, header_options
from services.gateway.routes import Binding, RouteTable

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
# Header set on every request Envoy forwards, whatever the client sent: the services count the
# per-user rate limit only for requests that came through the edge.
EDGE_HEADER = "x-bank-edge"
# application/json, with parameters (charset) or not, any case (media types are case-insensitive).
_JSON_CONTENT_TYPE = r"(?i)application/json\s*(;.*)?"
# Retried on any RPC: the request never reached a service.
_RETRY_ALWAYS = "connect-failure,refused-stream,reset-before-request"
_DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class RouteFiles:
    """The generated files Envoy serves, where Envoy reads them."""

    openapi: Path
    docs: Path


@dataclass(frozen=True)
class RouteTimeouts:
    # The deadline the services get (grpc-timeout), a little below Envoy's own route timeout, so
    # that a slow RPC ends with the service's DEADLINE_EXCEEDED rather than Envoy cutting it.
    grpc_deadline_s: float
    route_timeout_s: float


def route_config(table: RouteTable, files: RouteFiles, timeouts: RouteTimeouts) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        _file_route("/openapi.json", files.openapi, "application/json"),
        _file_route("/docs", files.docs, "text/html; charset=utf-8",
                    (("content-security-policy", _DOCS_CSP),)),
    ]
    for binding in table.bindings:
        routes.extend(_binding_routes(binding, timeouts))
    for pattern, methods in table.methods_by_path().items():
        routes.append(_method_not_allowed({"safe_regex": {"regex": pattern}}, methods))
    for path in ("/openapi.json", "/docs"):
        routes.append(_method_not_allowed({"path": path}, ["GET"]))
    routes.append(_local({"prefix": "/"}, 404, "no route for this path"))
    return {
        "name": "bank_api",
        # The OpenAPI document is served from a file; Envoy's default cap is 4 KiB.
        "max_direct_response_body_size_bytes": 1024 * 1024,
        "response_headers_to_add": header_options(SECURITY_HEADERS),
        "request_headers_to_add": [{
            "header": {"key": EDGE_HEADER, "value": "1"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }],
        "virtual_hosts": [{
            "name": "bank_api", "domains": ["*"], "routes": routes,
            # Every request yields the descriptor (masked_remote_address, <peer's group>) for
            # the per-address limit (envoy_config._address_limit): an IPv4 address, an IPv6 /64,
            # the grouping of every per-address limit (shared/call_metadata.address_group).
            "rate_limits": [{"actions": [{"masked_remote_address": {
                "v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}]}],
        }],
    }


def _binding_routes(binding: Binding, timeouts: RouteTimeouts) -> list[dict[str, Any]]:
    name = f"{binding.rpc.service.name}.{binding.rpc.method.name} {binding.route_label}"
    path = {"safe_regex": {"regex": binding.path.regex.pattern}}
    method = {"name": ":method", "string_match": {"exact": binding.http_method}}

    def upstream(suffix: str, headers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name + suffix, "match": {**path, "headers": [method, *headers]},
                "route": _upstream_action(binding, timeouts),
                "request_headers_to_add": _deadline(timeouts)}

    if not binding.body:
        return [upstream("", [])]
    no_type = {"name": "content-type", "present_match": False}
    query: list[dict[str, Any]] = []
    if binding.body == "*":
        # Every field comes from the body: the transcoder would merge a query string into it.
        query.append(_local({**path, "headers": [
            method, {"name": ":path", "string_match": {"contains": "?"}}]}, 400,
            "this route takes its fields in the JSON body, not the query string"))
    return [*query,
        upstream("", [{"name": "content-type",
                       "string_match": {"safe_regex": {"regex": _JSON_CONTENT_TYPE}}}]),
        # No body at all (no Content-Type, and no or a zero Content-Length) is an empty message.
        upstream(" (no body)", [no_type, {"name": "content-length", "present_match": False}]),
        upstream(" (empty body)", [no_type, {"name": "content-length",
                                              "string_match": {"exact": "0"}}]),
        _local({**path, "headers": [method]}, 415,
               "a request body needs 'Content-Type: application/json'"),
    ]


def _upstream_action(binding: Binding, timeouts: RouteTimeouts) -> dict[str, Any]:
    retry_on = _RETRY_ALWAYS + (",unavailable" if binding.rpc.side_effect_free else "")
    return {
        "cluster": cluster_name(binding.rpc.service.full_name),
        "timeout": _seconds(timeouts.route_timeout_s),
        "retry_policy": {
            "retry_on": retry_on,
            "num_retries": 2,
            # A retry goes to another replica when there is one.
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host"
                                          ".previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 3,
        },
    }


def _deadline(timeouts: RouteTimeouts) -> list[dict[str, Any]]:
    """The transcoded call carries no grpc-timeout of its own: the service's deadline."""
    return [{
        "header": {"key": "grpc-timeout", "value": f"{round(timeouts.grpc_deadline_s * 1000)}m"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }]


def _file_route(path: str, file: Path, content_type: str,
                extra_headers: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    return {
        "name": f"GET {path}",
        "match": {"path": path, "headers": [{"name": ":method",
                                             "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": header_options((("content-type", content_type),
                                                   *extra_headers)),
        "typed_per_filter_config": _no_transcoding(),
    }


def _method_not_allowed(match: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    allowed = ", ".join(methods)
    route = _local(match, 405, f"this path only answers {allowed}")
    route["response_headers_to_add"] = header_options((("allow", allowed),))
    return route


def _local(match: dict[str, Any], status: int, message: str) -> dict[str, Any]:
    """Envoy answers at once; local_replies.py turns the text into a Status body."""
    return {
        "name": f"{status} {message}",
        "match": match,
        "direct_response": {"status": status, "body": {"inline_string": message}},
        "typed_per_filter_config": _no_transcoding(),
    }


def _no_transcoding() -> dict[str, Any]:
    """Routes Envoy answers itself skip the transcoder (it would refuse a path that maps to no
    RPC before the route answers) and the removal of gRPC headers (a native gRPC client that
    lands here must still read the grpc-status of its refusal)."""
    disabled = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True}
    return {TRANSCODER: disabled, HEADER_MUTATION: dict(disabled)}


def _seconds(value: float) -> str:
    return f"{value:g}s"
