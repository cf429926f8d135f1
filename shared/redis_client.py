"""The Redis Cluster client factory. Every Redis call in the services goes through one of these."""

from __future__ import annotations

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.cache.circuit_breaker import CircuitBreaker, CircuitState
from shared.config import Settings
from shared.metrics import CIRCUIT_STATE
from shared.redis_pipeline import ClusterPipeline
from shared.tracing import current_tracing


def create_redis_cluster(settings: Settings) -> RedisCluster:
    """A cluster client with short timeouts: Redis is a cache here, and a slow cache must give way
    to PostgreSQL quickly instead of holding requests (docs/architecture.md, "Failure
    behaviour")."""
    timeout = settings.redis_timeout_ms / 1000
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in settings.redis_startup_nodes],
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=settings.redis_max_connections,
        # Callers decide about retries (the circuit breaker); the client's own retry loop would
        # multiply the timeout on a dead node.
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=False,
    )


async def redis_ready(client: RedisCluster) -> bool:
    """Health probe: True when the cluster answers PING on every primary."""
    try:
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    except Exception:
        return False


class RedisReadyOnce:
    """Readiness check: SERVING needs Redis once (the cluster must exist at start-up). After
    that a Redis outage degrades the service (reads from PostgreSQL, events via the outbox relay,
    sessions from PostgreSQL) instead of taking every replica out of rotation at once."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._seen = False

    async def __call__(self) -> bool:
        if not self._seen:
            self._seen = await redis_ready(self._client)
        return self._seen


def create_redis_pipeline(settings: Settings) -> ClusterPipeline:
    """The hot-path client (shared/redis_pipeline.py): one connection per primary, a hard
    deadline on every call."""
    tracing = current_tracing()
    return ClusterPipeline(settings.redis_startup_nodes, settings.redis_timeout_ms / 1000,
                           tracer=tracing.tracer() if tracing is not None else None)


def create_redis_breaker(settings: Settings) -> CircuitBreaker:
    """One breaker per process for Redis: after a run of failures every Redis use (sessions,
    limits, cache) goes straight to its fallback, then one call probes."""
    return CircuitBreaker(
        settings.circuit_failure_threshold,
        settings.circuit_reset_s,
        on_state_change=lambda state: CIRCUIT_STATE.set(state is not CircuitState.CLOSED),
    )
