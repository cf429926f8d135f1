"""Entrypoint: python -m services.account"""

from __future__ import annotations

import asyncio
import logging
import signal

from services.account.bootstrap import build_account_app
from shared.config import Settings
from shared.logging import configure_logging
from shared.metrics import start_metrics_server

log = logging.getLogger(__name__)


async def main() -> None:
    settings = Settings.from_env(service_name="account")
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    app = build_account_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The whole app, not only its gRPC server: the pool and the balance-event consumer too
    # (without the consumer, events were never applied and entries aged until their TTL).
    await app.start()
    log.info("serving", extra={"fields": {"port": app.grpc.port}})
    await stop.wait()
    # Drain: NOT_SERVING first, finish in-flight calls, then unsubscribe and close the clients.
    log.info("draining", extra={"fields": {"grace_s": settings.grpc_drain_grace_s}})
    await app.stop(settings.grpc_drain_grace_s)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
