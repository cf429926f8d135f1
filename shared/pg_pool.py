"""The hot-path PostgreSQL pool of the services: psycopg 3's own async pool, no ORM layer.

Measured in the transfer service: `SELECT 1` through an SQLAlchemy AsyncEngine costs about 280 µs
of client CPU, through psycopg_pool about 50 µs; and the engine's autobegin wraps every read in
BEGIN ... ROLLBACK (3 round trips), where an autocommit connection sends the statement alone.
Used by the transfer service (one statement per transfer) and the account service (its reads).
SQLAlchemy still serves the auth service's stores and the health probes.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared.config import Settings

PoolType = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]


def libpq_url(url: str) -> str:
    """Accept the SQLAlchemy spelling too (postgresql+psycopg://)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def create_pool(settings: Settings, *, size: int | None = None) -> PoolType:
    """Not opened yet: call `await pool.open()` inside the event loop (bootstrap's start)."""
    max_size = size or settings.db_pool_size
    return AsyncConnectionPool(
        libpq_url(settings.database_url),
        min_size=max_size,
        max_size=max_size,
        open=False,
        # Autocommit: one statement is one transaction, without BEGIN/COMMIT round trips.
        kwargs={
            "autocommit": True,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "connect_timeout": 3,
            "application_name": settings.service_name,
        },
        # A request waits this long for a connection, then fails UNAVAILABLE (safe to retry).
        timeout=max(1.0, settings.grpc_deadline_s),
        name=f"{settings.service_name}-pg",
    )

