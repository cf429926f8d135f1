"""A real Envoy, rendered by the gateway's generator, on free ports, stopped even when a test
fails: in front of any upstreams (`envoy_in_front`: the real services in the e2e and tracing
tests), or of FakeBankServer replicas (`running_gateway`: one cluster per service, each with every
replica)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.ports import free_ports
from services.gateway.bundle import render_local
from services.gateway.descriptors import load_catalog
from services.gateway.envoy_clusters import Upstream
from services.gateway.envoy_process import EnvoyProcess
from shared.config import Settings
from tests.support.fake_bank import FakeBankServer, Received, RpcBehaviour

SERVICES = ("account", "transfer", "auth")


def gateway_settings(**overrides: object) -> Settings:
    """Only the gateway's fields matter to the generator: no database, no Redis."""
    return Settings(database_url="", redis_nodes="", **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EnvoyFront:
    url: str
    tls: ssl.SSLContext  # trusts the bundle's self-signed certificate
    envoy: EnvoyProcess


@asynccontextmanager
async def envoy_in_front(folder: Path, settings: Settings,
                         upstreams: Sequence[Upstream]) -> AsyncIterator[EnvoyFront]:
    """Yields once Envoy sees every endpoint of every upstream healthy."""
    https_port, admin_port = free_ports(2)
    config = render_local(folder, settings, upstreams, https_port=https_port,
                          admin_port=admin_port)
    async with EnvoyProcess(config, admin_port, folder / "envoy.log") as envoy:
        for upstream in upstreams:
            await envoy.healthy(upstream.name, len(upstream.endpoints))
        yield EnvoyFront(f"https://127.0.0.1:{https_port}",
                         ssl.create_default_context(cafile=str(folder / "tls.crt")), envoy)


@dataclass
class RunningGateway:
    url: str
    tls: ssl.SSLContext
    envoy: EnvoyProcess
    replicas: list[FakeBankServer]
    folder: Path
    behaviours: dict[str, RpcBehaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def client(self, *, http2: bool = False, **options: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.tls, http2=http2,
                                 timeout=15, **options)  # type: ignore[arg-type]

    def reset(self) -> None:
        self.behaviours.clear()
        self.received.clear()

    def calls(self, method: str) -> list[Received]:
        return [r for r in self.received if r.method == method]


@asynccontextmanager
async def running_gateway(folder: Path, *, replicas: int = 2,
                          settings: Settings | None = None) -> AsyncIterator[RunningGateway]:
    catalog = load_catalog()
    behaviours: dict[str, RpcBehaviour] = {}
    received: list[Received] = []
    async with AsyncExitStack() as stack:
        servers = []
        for index in range(replicas):
            server = FakeBankServer(catalog, f"replica-{index}", behaviours=behaviours,
                                    received=received)
            await server.start()
            stack.push_async_callback(server.stop)
            servers.append(server)
        upstreams = [Upstream(name, tuple(("127.0.0.1", s.port) for s in servers))
                     for name in SERVICES]
        front = await stack.enter_async_context(
            envoy_in_front(folder, settings or gateway_settings(), upstreams))
        yield RunningGateway(front.url, front.tls, front.envoy, servers, folder, behaviours,
                             received)
