"""Entrypoint: python -m services.transfer"""

from __future__ import annotations

from services.transfer.bootstrap import build_transfer_app
from shared.service_main import run_service

if __name__ == "__main__":
    run_service("transfer", build_transfer_app)
