"""The Redis Cluster client factory. Every Redis call in the services goes through one of these."""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.cache.circuit_breaker import CircuitBreaker, CircuitState
from shared.config import Settings
from shared.metrics import CIRCUIT_STATE
from shared.redis_pipeline import ClusterPipeline, RedisCredentials
from shared.tracing import current_tracing


def redis_credentials(settings: Settings) -> RedisCredentials | None:
    """The process's ACL user; None when no user is configured (a Redis without ACLs)."""
    if not settings.redis_username:
        return None
    return RedisCredentials(settings.redis_username, settings.redis_password)


def redis_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS to the nodes, verified against BANK_REDIS_TLS_CA_FILE (or the system's CAs), with the
    client certificate when one is configured. Host names are checked: the nodes announce
    names their certificates carry (deploy/k8s/base/redis)."""
    if not settings.redis_tls:
        return None
    context = ssl.create_default_context(cafile=settings.redis_tls_ca_file or None)
    if settings.redis_tls_cert_file:
        context.load_cert_chain(settings.redis_tls_cert_file, settings.redis_tls_key_file)
    return context


def redis_connection_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments for the user and TLS, for every redis-py connection (the
    cluster client and the event subscription's per-node connections)."""
    options: dict[str, Any] = {}
    if settings.redis_username:
        options.update(username=settings.redis_username, password=settings.redis_password)
    if settings.redis_tls:
        options.update(ssl=True, ssl_ca_certs=settings.redis_tls_ca_file or None,
                       ssl_certfile=settings.redis_tls_cert_file or None,
                       ssl_keyfile=settings.redis_tls_key_file or None)
    return options


def create_redis_cluster(settings: Settings) -> RedisCluster:
    """redis-py's cluster client, for what the pipelined client does not do: the account
    service's sharded pub/sub subscription (and tests' direct looks). Short timeouts: Redis is a
    cache here, and a slow cache must give way to PostgreSQL quickly instead of holding requests
    (docs/architecture.md, "Failure behaviour"); callers bound every call besides."""
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
        **redis_connection_options(settings),
    )


def create_redis_pipeline(settings: Settings) -> ClusterPipeline:
    """The hot-path client (shared/redis_pipeline.py): one connection per primary, a hard
    deadline on every call."""
    tracing = current_tracing()
    return ClusterPipeline(settings.redis_startup_nodes, settings.redis_timeout_ms / 1000,
                           credentials=redis_credentials(settings),
                           tls=redis_tls_context(settings),
                           tracer=tracing.tracer() if tracing is not None else None)


def create_redis_breaker(settings: Settings, pipeline: ClusterPipeline | None = None,
                         *, exported: bool = True) -> CircuitBreaker:
    """One breaker per process for Redis: after a run of failures (errors and timeouts alike)
    every Redis use (sessions, limits, cache) goes straight to its fallback, then one call probes.
    With `pipeline`, the breaker also closes as soon as that client sees a suspect node answer
    again or a new topology, instead of waiting for its next probe. `exported`: the breaker is
    the one `bank_cache_circuit_open` shows (a background consumer's own breaker is not)."""
    breaker = CircuitBreaker(
        settings.circuit_failure_threshold,
        settings.circuit_reset_s,
        on_state_change=(lambda state: CIRCUIT_STATE.set(state is not CircuitState.CLOSED))
        if exported else None,
    )
    if pipeline is not None:
        pipeline.add_topology_listener(lambda _event: breaker.reset())
    return breaker
