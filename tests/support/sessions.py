"""Sessions for tests: the auth service's own store, signed with the tests' key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.adapters.session_store import SessionStore
from shared.config import Settings
from shared.pg_pool import create_pool
from shared.redis_client import create_redis_breaker, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import RequestGate, build_request_gate
from shared.sessions import SessionEntrySigner

TEST_SESSION_SIGNING_KEY = "test-only-session-signing-key-0123456789abcdef"


def session_store(engine: AsyncEngine, redis: ClusterPipeline | None = None, *,
                  ttl_s: int = 900, absolute_ttl_s: int = 43_200,
                  key: str = TEST_SESSION_SIGNING_KEY) -> SessionStore:
    """Without `redis` the session is only in PostgreSQL: the first request confirms it."""
    return SessionStore(engine, redis, SessionEntrySigner(key), ttl_s=ttl_s,
                        absolute_ttl_s=absolute_ttl_s)


async def open_session(engine: AsyncEngine, user_id: str,
                       redis: ClusterPipeline | None = None) -> str:
    """A new session's token."""
    return (await session_store(engine, redis).create(user_id)).token


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
