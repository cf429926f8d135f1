"""The gRPC server bootstrap every service uses: grpc.aio, one interceptor for request ids,
auth, error mapping, metrics and logs, the standard health service (SERVING only while the
readiness checks pass), reflection, keepalive and max-connection-age, and a graceful drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from shared.config import Settings
from shared.grpc_interceptor import Prefetch, ServiceInterceptor
from shared.grpc_tls import server_credentials
from shared.machine_credentials import MachineCredentials
from shared.pg_pool import PoolType, database_ready
from shared.request_gate import RequestGate
from shared.task_stopping import stop_tasks
from shared.tracing import current_tracing

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

# Health-service name that is SERVING while the process runs, whatever PostgreSQL and Redis do:
# Kubernetes' liveness probe asks for it, so an outage of a dependency makes pods unready (no
# traffic) instead of restarting every pod at once. Readiness asks for "" (the readiness checks).
LIVENESS_SERVICE = "liveness"


def standard_readiness(probe: PoolType) -> list[ReadinessCheck]:
    """SERVING while PostgreSQL answers. Redis is not asked: every use of it has a PostgreSQL
    fallback, so a pod starts and serves during a Redis outage, slower (docs/decisions.md,
    Readiness)."""

    async def database() -> bool:
        return await database_ready(probe)

    return [database]


def servicer_registration(
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    servicer: object,
    service: ServiceDescriptor,
) -> Callable[[grpc.aio.Server], list[str]]:
    """The `register` argument of build_grpc_service for one generated servicer."""

    def register(server: grpc.aio.Server) -> list[str]:
        add_to_server(servicer, server)
        return [service.full_name]

    return register


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        # Keepalive lets both ends notice dead peers behind NAT/load balancers.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Kubernetes Services balance connections, not requests: closing connections after an
        # age makes clients re-resolve DNS and spread over new replicas.
        ("grpc.max_connection_age_ms", settings.grpc_max_connection_age_s * 1000),
        ("grpc.max_connection_age_grace_ms", int(settings.grpc_drain_grace_s * 1000)),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ]


@dataclass
class GrpcService:
    """A running server and the pieces tests and entrypoints need to reach."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: Sequence[str]
    readiness_checks: Sequence[ReadinessCheck]
    health_poll_s: float = 1.0
    # Health only, in plaintext, beside a TLS server: for probes that cannot speak TLS.
    health_server: grpc.aio.Server | None = None
    _health_task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def refresh_health(self) -> bool:
        ready = True
        for check in self.readiness_checks:
            if not await check():
                ready = False
                break
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)
        return ready

    async def _watch_health(self) -> None:
        while True:
            try:
                await self.refresh_health()
            except Exception:  # the watcher must outlive any one bad probe
                log.exception("health refresh failed")
            await asyncio.sleep(self.health_poll_s)

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.refresh_health()
        self._health_task = asyncio.create_task(self._watch_health(), name="health-watch")

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING first so balancers stop sending, then finish in-flight calls."""
        if self._health_task is not None:
            await stop_tasks([self._health_task])
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


def build_grpc_service(
    settings: Settings,
    *,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    readiness_checks: Sequence[ReadinessCheck],
    gate: RequestGate | None,
    prefetch: Mapping[str, Prefetch] | None = None,
    machines: MachineCredentials | None = None,
    port: int | None = None,
    health_poll_s: float = 1.0,
) -> GrpcService:
    """Create (not start) a server. `register` adds servicers and returns their full names;
    `prefetch` maps full method names to their prefetch (shared/grpc_interceptor.py)."""
    interceptors: list[Any] = [ServiceInterceptor(settings.service_name, gate, prefetch,
                                                  machines)]
    tracing = current_tracing()
    if tracing is not None:  # outermost: the call's span covers everything below
        interceptors.insert(0, tracing.server_interceptor)
    server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
    names = list(register(server))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    address = f"{settings.grpc_host}:{settings.grpc_port if port is None else port}"
    # TLS (mTLS with a client CA) when configured: Envoy and the other services reach every
    # replica over the network in compose and Kubernetes (shared/grpc_tls.py).
    credentials = server_credentials(settings)
    bound = (server.add_insecure_port(address) if credentials is None
             else server.add_secure_port(address, credentials))
    health_server = None
    if credentials is not None and settings.grpc_health_port:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
        health_server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_health_port}")
    return GrpcService(server, bound, health, names, readiness_checks, health_poll_s,
                       health_server)
