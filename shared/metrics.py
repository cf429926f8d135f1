"""Every Prometheus metric the services export, defined once so that names stay consistent with
the dashboard in deploy/ (a test checks that each metric the dashboard queries exists)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

GRPC_REQUESTS = Counter(
    "bank_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "bank_grpc_request_seconds", "gRPC handling time", ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "bank_cache_requests_total",
    "Cache lookups by key kind and result (hit, miss, bypass, fallback)",
    ["kind", "result"],
)
CACHE_WRITES = Counter(
    "bank_cache_writes_total",
    "Cache compare-and-set writes by key kind and outcome (written, stale_rejected)",
    ["kind", "outcome"],
)
CACHE_WARMUPS = Counter(
    "bank_cache_warmups_total",
    "Warm-ups after a login by outcome (cached: nothing to do, loaded: read PostgreSQL once,"
    " unavailable: Redis could not take entries)",
    ["outcome"],
)
CACHE_WARMUP_CALLS = Counter(
    "bank_cache_warmup_calls_total",
    "WarmCache calls the auth service made after logins, by outcome (done, failed, skipped)",
    ["outcome"],
)
CIRCUIT_STATE = Gauge("bank_cache_circuit_open", "1 while the Redis circuit breaker is open")
DB_QUERIES = Counter("bank_db_queries_total", "Database round trips", ["service", "query"])
EVENT_LAG = Histogram(
    "bank_event_lag_seconds", "Commit-to-apply lag of balance-changed events",
    buckets=_LATENCY_BUCKETS,
)
EVENTS = Counter(
    "bank_events_total",
    "Balance-changed events by outcome (published, applied, gap, catch_up, catch_up_failed,"
    " repair)",
    ["outcome"],
)
OUTBOX_BACKLOG = Gauge(
    "bank_outbox_backlog", "Outbox rows the relay has to deliver (unconfirmed past its minimum age)"
)
RETENTION_DELETED = Counter(
    "bank_retention_deleted_total", "Rows the retention jobs deleted, by job and rule",
    ["job", "rule"],
)
CATCH_UP_PENDING = Gauge(
    "bank_event_catch_up_pending",
    "Accounts whose cache update failed and waits for the catch-up's next retry",
)
SESSION_CHECKS = Counter(
    "bank_session_checks_total",
    "Session checks of the request gate by outcome (redis_hit, confirmed by PostgreSQL,"
    " redis_down, refused)",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "bank_rate_limited_total", "Requests refused by a rate limit, by scope (user, address)",
    ["scope"],
)
REDIS_FALLBACKS = Counter(
    "bank_redis_fallbacks_total",
    "Redis calls not made or failed, answered by the fallback instead, by component and reason",
    ["component", "reason"],
)
HASH_POOL_REFUSALS = Counter(
    "bank_auth_hash_pool_refusals_total",
    "Password hashing work refused at once (UNAVAILABLE) because its pool was full, by pool",
    ["pool"],
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics; port 0 means disabled (tests run several replicas in one process)."""
    if port:
        start_http_server(port, addr=host)
