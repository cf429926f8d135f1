"""Entrypoint: python -m services.auth"""

from __future__ import annotations

from services.auth.bootstrap import build_auth_app
from shared.service_main import run_service

if __name__ == "__main__":
    run_service("auth", build_auth_app)
