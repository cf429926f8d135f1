"""The ASGI app: Starlette for the fixed endpoints (/healthz, /readyz, /metrics, /openapi.json,
/docs) and the lifespan; the generated API routes are answered by `ApiHandler`, which the
top-level dispatcher calls directly for API paths so the hot path skips Starlette's middleware.

One API request: match the route (precompiled) -> one Redis round trip (session + limit +
read-your-writes version) -> build the request message -> one gRPC call -> JSON.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from services.gateway import http_request
from services.gateway.errors import HttpError, error_body, from_rpc_error, retry_info
from services.gateway.metrics import RATE_LIMITED, RouteMetrics
from services.gateway.routes import Binding, RouteTable
from services.gateway.session_gate import GateResult
from services.gateway.transcoding import build_request, reply_json
from shared.auth_context import Caller
from shared.caller_assertion import CALLER_ASSERTION_HEADER, CallerAssertions
from shared.logging import request_id_var
from shared.rate_limit import LimitDecision

log = logging.getLogger(__name__)

_JSON = b"application/json"


class Gate(Protocol):
    async def check_session(self, token: str, account_id: str | None) -> GateResult: ...
    async def check_address(self, address: str) -> LimitDecision: ...
    async def remember_write(self, caller: Caller, account_id: str, version: int) -> None: ...


class Upstreams(Protocol):
    async def call(self, full_method: str, request: Message,
                   metadata: tuple[tuple[str, str], ...]) -> Message: ...
    async def readiness(self) -> dict[str, bool]: ...


class ApiHandler:
    def __init__(self, table: RouteTable, gate: Gate, upstreams: Upstreams, *,
                 max_body_bytes: int, trusted_hops: int,
                 assertions: CallerAssertions | None = None) -> None:
        self._table = table
        self._assertions = assertions
        self._gate = gate
        self._upstreams = upstreams
        self._max_body_bytes = max_body_bytes
        self._trusted_hops = trusted_hops
        self._metrics = RouteMetrics()
        self._new_request_id = http_request.RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = http_request.RequestHeaders.parse(scope["headers"])
        rid = http_request.request_id(headers, self._new_request_id)
        request_id_var.set(rid)
        route = "unmatched"
        extra: list[tuple[bytes, bytes]] = []
        try:
            raw_path = scope.get("raw_path")
            path = raw_path.decode("latin-1") if raw_path else scope["path"]
            binding, params = self._table.match(scope["method"], path)
            route = binding.route_label
            status, payload = 200, await self._serve(binding, params, scope, receive, headers,
                                                     rid, extra)
        except HttpError as err:
            status, payload = err.http_status, err.body()
            extra.extend(err.headers)
        except grpc.aio.AioRpcError as err:
            mapped = from_rpc_error(err, rid)
            if mapped.http_status >= 500:
                log.warning("upstream %s answered %s: %s", route, err.code().name, err.details())
            status, payload = mapped.http_status, mapped.body()
            extra.extend(mapped.headers)
        except http_request.ClientDisconnected:
            self._metrics.observe(route, 499, time.perf_counter() - started)
            return
        except Exception:
            log.exception("unhandled error on %s", route)
            status = 500
            payload = error_body(grpc.StatusCode.INTERNAL, f"internal error (request id {rid})")
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _JSON),
                        (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", rid.encode()), *extra],
        })
        await send({"type": "http.response.body", "body": payload})
        self._metrics.observe(route, status, time.perf_counter() - started)

    async def _serve(self, binding: Binding, params: dict[str, str], scope: Scope,
                     receive: Receive, headers: http_request.RequestHeaders, rid: str,
                     extra: list[tuple[bytes, bytes]]) -> bytes:
        address = http_request.client_address(scope, headers, self._trusted_hops)
        caller: Caller | None = None
        token = ""
        min_version = 0
        if binding.public:
            decision = await self._gate.check_address(address)
        else:
            token = http_request.bearer_token(headers)
            result = await self._gate.check_session(
                token, params.get("account_id") if binding.read_your_writes else None
            )
            decision, caller, min_version = result.limit, result.caller, result.min_version
        extra.extend(decision.headers())
        if not decision.allowed:
            RATE_LIMITED.labels(decision.scope).inc()
            raise HttpError(429, grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"rate limit of {decision.limit} requests per {decision.window_s} s "
                            f"exceeded; retry in {decision.retry_after_s} s",
                            details=[retry_info(decision.retry_after_s)])
        body = (await http_request.read_json_body(receive, headers, self._max_body_bytes)
                if binding.body else b"")
        request = build_request(binding, params, scope.get("query_string", b""), body)
        if binding.idempotency_key_field:
            _apply_idempotency_key(request, binding.idempotency_key_field, headers)
        if min_version and binding.read_your_writes:
            request.min_version = max(request.min_version, min_version)  # type: ignore[attr-defined]
        metadata: list[tuple[str, str]] = [("x-request-id", rid), ("x-forwarded-for", address)]
        if caller is not None and self._assertions is not None:
            # One HMAC instead of a Redis round trip per service (shared/caller_assertion.py).
            metadata.append((CALLER_ASSERTION_HEADER, self._assertions.mint(caller)))
        elif caller is not None:
            metadata.append(("authorization", "Bearer " + token))
        agent = http_request.user_agent(headers)
        if agent:
            metadata.append(("x-user-agent", agent))
        reply = await self._upstreams.call(binding.rpc.full_method, request, tuple(metadata))
        if binding.records_write and caller is not None:
            written = reply.source_balance  # type: ignore[attr-defined]
            if written.account_id and written.version:
                await self._gate.remember_write(caller, written.account_id, written.version)
        return reply_json(binding, reply)


def _apply_idempotency_key(request: Message, field: str, headers: http_request.RequestHeaders
                           ) -> None:
    key = http_request.idempotency_key(headers)
    if key is None:
        return
    in_body = getattr(request, field)
    if in_body and in_body != key:
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT,
                        "the Idempotency-Key header and the body's idempotencyKey differ")
    setattr(request, field, key)


class ApiRoute(BaseRoute):
    """Starlette's last route: every path not claimed by a fixed endpoint goes to the API
    handler, which answers unknown paths with a JSON 404 (or 405) itself."""

    def __init__(self, handler: ApiHandler) -> None:
        self._handler = handler

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL, {}) if scope["type"] == "http" else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)


class GatewayASGI:
    """API paths straight to the handler; everything else (and the lifespan) to Starlette."""

    def __init__(self, api: ApiHandler, api_prefixes: tuple[str, ...], starlette: Starlette
                 ) -> None:
        self._api = api
        self._prefixes = api_prefixes
        self.starlette = starlette

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._prefixes):
            await self._api(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def build_asgi(
    handler: ApiHandler,
    table: RouteTable,
    upstreams: Upstreams,
    openapi: dict[str, Any],
    docs_html: str,
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
    is_draining: Callable[[], bool],
) -> GatewayASGI:
    openapi_bytes = json.dumps(openapi, separators=(",", ":")).encode()

    async def healthz(_: Request) -> Response:
        if is_draining():
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        upstream = await upstreams.readiness()
        ready = all(upstream.values()) and not is_draining()
        return JSONResponse({"ready": ready, "upstreams": upstream},
                            status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(_: Request) -> Response:
        return Response(openapi_bytes, media_type="application/json")

    async def docs(_: Request) -> Response:
        return HTMLResponse(docs_html)

    starlette = Starlette(
        routes=[
            Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
            Route("/openapi.json", openapi_json), Route("/docs", docs), ApiRoute(handler),
        ],
        lifespan=lifespan,
    )
    prefixes = tuple(sorted({"/" + b.path.template.split("/")[1] + "/" for b in table.bindings}))
    return GatewayASGI(handler, prefixes, starlette)

