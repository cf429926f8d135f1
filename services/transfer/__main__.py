"""Entrypoint: python -m services.transfer"""

from __future__ import annotations

from services.transfer.bootstrap import build_transfer_app
from shared.config import Settings
from shared.grpc_server import run_until_signalled
from shared.logging import configure_logging
from shared.metrics import start_metrics_server


async def main() -> None:
    settings = Settings.from_env(service_name="transfer")
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    app = build_transfer_app(settings)
    app.dispatcher.start()
    await run_until_signalled(app.grpc, settings.grpc_drain_grace_s, on_stop=app.close)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
