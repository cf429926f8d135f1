"""Entrypoint: python -m services.transfer.relay (the outbox relay; see
service_layer/outbox_relay.py). Several may run: they share the work through SKIP LOCKED."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.transfer.bootstrap import build_relay_app
from shared.config import Settings
from shared.logging import configure_logging
from shared.metrics import start_metrics_server

log = logging.getLogger(__name__)


async def main() -> None:
    settings = Settings.from_env(service_name="outbox-relay")
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    app = build_relay_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    log.info("outbox relay running")
    await stop.wait()
    await app.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
