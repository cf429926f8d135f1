"""Entrypoint: python -m services.auth.retention [--once] (the auth service's retention job:
service_layer/retention.py says what it prunes)."""

from __future__ import annotations

from services.auth.bootstrap import build_retention_job
from shared.retention import retention_main

if __name__ == "__main__":
    raise SystemExit(retention_main("auth-retention", "services.auth.retention",
                                    build_retention_job))
