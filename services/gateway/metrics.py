"""The gateway's Prometheus metrics (the services' own are in shared/metrics.py).

Labels are the route template ("GET /v1/accounts/{account_id}/balance"), never the concrete path,
so cardinality stays bounded by the number of RPCs.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

HTTP_REQUESTS = Counter(
    "bank_gateway_requests_total", "HTTP requests answered, by route and status",
    ["route", "status"],
)
HTTP_LATENCY = Histogram(
    "bank_gateway_request_seconds", "HTTP request handling time, by route", ["route"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "bank_gateway_rate_limited_total", "Requests refused with 429, by limit scope", ["scope"],
)
SESSION_CHECKS = Counter(
    "bank_gateway_session_checks_total",
    "Session checks by outcome (redis_hit, redis_miss, redis_down, revoked, bad_secret)",
    ["outcome"],
)
REDIS_FALLBACKS = Counter(
    "bank_gateway_redis_fallbacks_total",
    "Requests whose session/limit check fell back from Redis, by reason", ["reason"],
)


class RouteMetrics:
    """Labelled children resolved once per (route, status): `.labels()` is a dict lookup plus a
    lock, which is measurable at thousands of requests a second."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, int], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = HTTP_REQUESTS.labels(route, str(status))
        counter.inc()
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = HTTP_LATENCY.labels(route)
        histogram.observe(seconds)
