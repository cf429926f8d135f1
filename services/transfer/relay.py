"""Entrypoint: python -m services.transfer.relay (the outbox relay; see
service_layer/outbox_relay.py). Several may run: they share the work through SKIP LOCKED."""

from __future__ import annotations

from services.transfer.bootstrap import build_relay_app
from shared.service_main import run_service

if __name__ == "__main__":
    run_service("outbox-relay", build_relay_app)
