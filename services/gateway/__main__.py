"""Entrypoint: python -m services.gateway (one replica; run several on different ports)."""

from __future__ import annotations

from services.gateway.bootstrap import run_forever
from shared.config import Settings
from shared.logging import configure_logging
from shared.metrics import start_metrics_server


def main() -> None:
    settings = Settings.from_env(service_name="gateway")
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    # /metrics is also served on the HTTP port; this one is for scrapers that expect a port.
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    run_forever(settings)


if __name__ == "__main__":
    main()
