"""SQLAlchemy, for Alembic (migrations/env.py, the migrate Job, wait-for-schema) and the tooling
that seeds and inspects databases (devstack, the bench's population, tests). The services never
use it: they read and write through psycopg's pool (shared/pg_pool.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.config import Settings


def to_sqlalchemy_url(url: str) -> str:
    """Accept a plain postgresql:// URL (what libpq tools use) and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"BANK_DATABASE_URL must be a postgresql:// URL, got {url.split(':')[0]}:")


def create_engine(settings: Settings, *, pool_size: int = 5) -> AsyncEngine:
    """An async engine for seeding and inspection (never on a request path)."""
    return create_async_engine(
        to_sqlalchemy_url(settings.database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"connect_timeout": 3, "application_name": settings.service_name},
    )
