"""PostgreSQL access: one SQLAlchemy 2 async engine on psycopg 3 per process."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.config import Settings


def to_sqlalchemy_url(url: str) -> str:
    """Accept a plain postgresql:// URL (what libpq tools use) and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"BANK_DATABASE_URL must be a postgresql:// URL, got {url.split(':')[0]}:")


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        to_sqlalchemy_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,  # a dead connection surfaces as an error and is replaced; a ping per
        # checkout would add a round trip to every query on the hot path.
        pool_recycle=1800,
        connect_args={
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "connect_timeout": 3,
            "application_name": settings.service_name,
        },
    )


async def database_ready(engine: AsyncEngine) -> bool:
    """Health probe: True when PostgreSQL answers a trivial query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
