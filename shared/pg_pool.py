"""The services' one PostgreSQL access stack: psycopg 3's own async pool, no ORM layer.

Measured in the transfer service: `SELECT 1` through an SQLAlchemy AsyncEngine costs about 280 µs
of client CPU, through psycopg_pool about 50 µs; and the engine's autobegin wraps every read in
BEGIN ... ROLLBACK (3 round trips), where an autocommit connection sends the statement alone.
Every service reads and writes through `create_pool` (one statement, one round trip, one
transaction), and answers its health probe through `create_probe_pool` (one connection of its
own, so that a saturated pool does not fail the probe). SQLAlchemy is left to Alembic and the
tooling (shared/db.py). docs/database.md has the connection budget these pools add up to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.config import Settings
from shared.errors import Unavailable

PoolType = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]

# How long the health probe waits for its connection and its answer.
PROBE_TIMEOUT_S = 2.0
# A service process opens its pool (Settings.db_pool_size) and this many more for the probe.
PROBE_CONNECTIONS = 1


def libpq_url(url: str) -> str:
    """Accept the SQLAlchemy spelling too (postgresql+psycopg://)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def create_pool(settings: Settings, *, size: int | None = None, role: str = "") -> PoolType:
    """Not opened yet: call `await pool.open()` inside the event loop (bootstrap's start).
    `role` names the pool in PostgreSQL's application_name (`transfer`, `transfer-probe`)."""
    settings.require("database_url")
    max_size = size or settings.db_pool_size
    name = settings.service_name + (f"-{role}" if role else "")
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
            "application_name": name,
        },
        # A request waits this long for a connection, then fails UNAVAILABLE (safe to retry).
        timeout=max(1.0, settings.grpc_deadline_s),
        name=f"{name}-pg",
    )


def create_probe_pool(settings: Settings) -> PoolType:
    """The health probe's own connection."""
    return create_pool(settings, size=PROBE_CONNECTIONS, role="probe")


async def database_ready(pool: PoolType) -> bool:
    """Health probe: True when PostgreSQL answers a trivial query within PROBE_TIMEOUT_S."""
    try:
        async with pool.connection(timeout=PROBE_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
        return True
    except Exception:
        return False


@contextlib.contextmanager
def unavailable_when_unreachable(message: str = "the database is busy or unreachable; retry"
                                 ) -> Iterator[None]:
    """A pool without a free connection within its timeout, or a database that cannot be
    reached, is UNAVAILABLE: the client may retry. Other errors (a bug, a constraint) stay what
    they are."""
    try:
        yield
    except (PoolTimeout, psycopg.OperationalError) as error:
        raise Unavailable(message) from error
