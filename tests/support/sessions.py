"""Sessions for tests: the auth service's own store, signed with the tests' key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.adapters.session_store import SessionStore
from shared.config import Settings
from shared.pg_pool import PoolType, create_pool, libpq_url
from shared.redis_client import create_redis_breaker, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import RequestGate, build_request_gate
from shared.sessions import SessionEntrySigner

TEST_SESSION_SIGNING_KEY = "test-only-session-signing-key-0123456789abcdef"


def session_store(pool: PoolType, redis: ClusterPipeline | None = None, *,
                  ttl_s: int = 900, absolute_ttl_s: int = 43_200,
                  key: str = TEST_SESSION_SIGNING_KEY) -> SessionStore:
    """Without `redis` the session is only in PostgreSQL: the first request confirms it."""
    return SessionStore(pool, redis, SessionEntrySigner(key), ttl_s=ttl_s,
                        absolute_ttl_s=absolute_ttl_s)


async def open_session(engine: AsyncEngine, user_id: str,
                       redis: ClusterPipeline | None = None) -> str:
    """A new session's token, made by the auth service's store on a connection of its own (the
    seeding helpers work on the tests' SQLAlchemy engine; the store takes psycopg's pool)."""
    url = libpq_url(engine.url.render_as_string(hide_password=False))
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        return (await session_store(pool, redis).create(user_id)).token


@contextlib.asynccontextmanager
async def request_gate(settings: Settings) -> AsyncIterator[RequestGate]:
    """A service's request gate on its own pipeline and pool, closed afterwards."""
    pipeline = create_redis_pipeline(settings)
    pool = create_pool(settings, size=2)
    await pool.open(wait=False)
    try:
        yield build_request_gate(settings, pipeline, pool, create_redis_breaker(settings))
    finally:
        await pool.close()
        await pipeline.close()
