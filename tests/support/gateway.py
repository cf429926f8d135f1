"""A real Envoy, rendered by the gateway's generator, in front of FakeBankServer replicas (one
cluster per service, each with every replica), on free ports, stopped even when a test fails."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
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
        https_port, admin_port = free_ports(2)
        upstreams = [Upstream(name, tuple(("127.0.0.1", s.port) for s in servers))
                     for name in SERVICES]
        config = render_local(folder, settings or gateway_settings(), upstreams,
                              https_port=https_port, admin_port=admin_port)
        envoy = await stack.enter_async_context(
            EnvoyProcess(config, admin_port, folder / "envoy.log"))
        for name in SERVICES:
            await envoy.healthy(name, replicas)
        yield RunningGateway(f"https://127.0.0.1:{https_port}",
                             ssl.create_default_context(cafile=str(folder / "tls.crt")),
                             envoy, servers, folder, behaviours, received)
