"""The one place where the gateway's dependencies are built, and the ways to run it: uvicorn in
this process (tests, several replicas in one event loop) or as `python -m services.gateway`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from services.gateway.descriptors import load_catalog
from services.gateway.http_app import ApiHandler, GatewayASGI, build_asgi
from services.gateway.openapi import build_openapi, docs_page
from services.gateway.routes import RouteTable, build_route_table
from services.gateway.session_gate import CircuitBreaker, SessionGate
from services.gateway.upstreams import GrpcUpstreams, targets_from_settings
from shared.caller_assertion import CallerAssertions
from shared.config import Settings
from shared.redis_pipeline import ClusterScripts

log = logging.getLogger(__name__)

# After SIGTERM, /healthz answers 503 this long before the listener closes, so that Envoy's
# active health check (1 s interval) takes the replica out before connections are refused.
DRAIN_DELAY_S = 2.0


@dataclass
class GatewayApp:
    settings: Settings
    table: RouteTable
    openapi: dict[str, Any]
    scripts: ClusterScripts
    upstreams: GrpcUpstreams
    gate: SessionGate
    asgi: GatewayASGI = field(init=False)
    draining: bool = False

    async def start(self) -> None:
        await self.upstreams.start()
        await self.gate.warm_up()

    async def close(self) -> None:
        self.draining = True
        await self.upstreams.close()
        await self.scripts.close()


def build_gateway_app(
    settings: Settings,
    *,
    targets: Mapping[str, str] | None = None,
    descriptor_set: Path | None = None,
) -> GatewayApp:
    """Routes and the OpenAPI document from the descriptors; clients are made, not connected
    (channels open in `start()`, run by the ASGI lifespan)."""
    catalog = load_catalog(descriptor_set)
    table = build_route_table(catalog.rpcs)
    openapi = build_openapi(table, catalog.comments)
    scripts = ClusterScripts(settings.redis_startup_nodes, settings.redis_timeout_ms / 1000)
    upstreams = GrpcUpstreams(targets or targets_from_settings(settings), catalog.rpcs,
                              settings.grpc_deadline_s)
    gate = SessionGate(
        scripts,
        upstreams,
        limit_per_minute=settings.rate_limit_per_minute,
        session_ttl_s=settings.session_ttl_s,
        read_your_writes_ttl_s=settings.read_your_writes_ttl_s,
        breaker=CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_s),
    )
    handler = ApiHandler(table, gate, upstreams, max_body_bytes=settings.gateway_max_body_bytes,
                         trusted_hops=settings.gateway_trusted_hops,
                         assertions=(CallerAssertions(settings.caller_assertion_key)
                                     if settings.caller_assertion_key else None))
    app = GatewayApp(settings, table, openapi, scripts, upstreams, gate)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await app.start()
        try:
            yield
        finally:
            await app.close()

    app.asgi = build_asgi(handler, table, upstreams, openapi, docs_page(openapi), lifespan,
                          lambda: app.draining)
    return app


def uvicorn_config(app: GatewayApp, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "lifespan": "on",
        "access_log": False,  # a log line per request costs more than the request's own work
        "log_config": None,  # keep the process' logging (shared.logging) as it is
        "proxy_headers": False,  # X-Forwarded-For is read by the gateway itself (trusted hops)
        "server_header": False,
        "http": "httptools",
        "timeout_graceful_shutdown": max(1, int(app.settings.grpc_deadline_s) + 1),
        "timeout_keep_alive": 75,  # above Envoy's upstream idle timeout (60 s)
    }
    options.update(overrides)
    return uvicorn.Config(app.asgi, **options)


class _QuietServer(uvicorn.Server):
    """In-process replicas leave the test runner's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class RunningGateway:
    app: GatewayApp
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(SystemExit):
            await self.task


async def start_gateway_server(app: GatewayApp, port: int = 0) -> RunningGateway:
    """Serve `app` with uvicorn in the running event loop; returns once it accepts requests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((app.settings.gateway_host, port))
    sock.listen(2048)
    sock.setblocking(False)
    server = _QuietServer(uvicorn_config(app))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-uvicorn")
    while not server.started:
        if task.done():
            sock.close()
            with contextlib.suppress(SystemExit):
                task.result()
            raise RuntimeError("the gateway failed to start (see the log above)")
        await asyncio.sleep(0.01)
    return RunningGateway(app, server, task, sock.getsockname()[1])


@asynccontextmanager
async def serve_gateway(
    settings: Settings, *, port: int = 0, targets: Mapping[str, str] | None = None
) -> AsyncIterator[RunningGateway]:
    """A real uvicorn server in this process on a free port, stopped on exit (even on failure)."""
    running = await start_gateway_server(build_gateway_app(settings, targets=targets), port)
    try:
        yield running
    finally:
        await running.stop()


class _DrainingServer(uvicorn.Server):
    """SIGTERM: report 503 on /healthz first, stop accepting DRAIN_DELAY_S later."""

    def __init__(self, config: uvicorn.Config, app: GatewayApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._app.draining or sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        self._app.draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(loop.call_later, DRAIN_DELAY_S, super().handle_exit, sig, frame)


def run_forever(settings: Settings) -> None:
    app = build_gateway_app(settings)
    config = uvicorn_config(app, host=settings.gateway_host, port=settings.gateway_port,
                            loop="uvloop")
    _DrainingServer(config, app).run()
