"""Entrypoint: python -m services.transfer.retention [--once] (the transfer service's retention
job: service_layer/retention.py says what it prunes)."""

from __future__ import annotations

from services.transfer.bootstrap import build_retention_job
from shared.retention import retention_main

if __name__ == "__main__":
    raise SystemExit(retention_main("transfer-retention", "services.transfer.retention",
                                    build_retention_job))
