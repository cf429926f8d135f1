"""Entrypoint: python -m services.account"""

from __future__ import annotations

from services.account.bootstrap import build_account_app
from shared.service_main import run_service

if __name__ == "__main__":
    run_service("account", build_account_app)
