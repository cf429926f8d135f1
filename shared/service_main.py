"""The one `__main__` of every backend process: settings, logs, metrics, start, wait for
SIGTERM/SIGINT, drain. Each service's `__main__.py` only names its builder."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from shared.config import Settings
from shared.logging import configure_logging
from shared.metrics import start_metrics_server
from shared.tracing import configure_tracing

log = logging.getLogger(__name__)


class ServiceApp(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: float = 0.0) -> None: ...


async def serve(service_name: str, build: Callable[[Settings], ServiceApp]) -> None:
    settings = Settings.from_env(service_name=service_name)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    tracing = configure_tracing(settings)  # before the app: its clients pick it up
    app = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The whole app, not only its gRPC server: pools, event consumers and publishers too.
    await app.start()
    log.info("started")
    await stop.wait()
    # Drain: NOT_SERVING first, finish in-flight calls, then background work, then clients.
    log.info("draining", extra={"fields": {"grace_s": settings.grpc_drain_grace_s}})
    await app.stop(settings.grpc_drain_grace_s)
    if tracing is not None:
        tracing.shutdown()  # export what is still batched


def run_service(service_name: str, build: Callable[[Settings], ServiceApp]) -> None:
    import uvloop

    uvloop.run(serve(service_name, build))
