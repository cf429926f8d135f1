"""Figures derived from a run's raw results (pure): hit rates, database rates, maxima, goals."""

from __future__ import annotations

from dataclasses import dataclass

from bench.histogram import LatencyHistogram
from bench.model import BenchRun, MixedPhase, PhaseResult, Step
from bench.observe import SampleKey, sum_by
from bench.statements import StatementCounts
from bench.tables import ratio, reduction
from bench.workload import READS, Op

# Below this share of failed requests a closed-loop step still counts for a maximum.
MAX_ERROR_SHARE = 0.01
# argon2id is slow by design: the design's latency goals are about the API calls, not logins.
LOGIN = Op.LOGIN.value


# Lookup outcomes (shared/cache/read_through.py): a read-your-writes read answered after waiting
# for the in-flight event is a hit; one that read through (bypass) or found Redis unavailable
# (fallback) is a miss. Other results (lease_wait_expired, version_wait_expired) annotate a
# lookup already counted, so they are left out of the rate.
SERVED_FROM_CACHE = ("hit", "hit_after_wait")
SERVED_FROM_DATABASE = ("miss", "bypass", "fallback")


@dataclass(frozen=True)
class HitCounts:
    hits: float
    misses: float
    other: float  # annotations of lookups counted above (lease/version wait expired)

    @property
    def hit_rate(self) -> float | None:
        return ratio(self.hits, self.hits + self.misses)


def cache_hits_by_kind(metrics: dict[SampleKey, float]) -> dict[str, HitCounts]:
    """From the services' bank_cache_requests_total{kind, result}, summed over replicas."""
    grouped = sum_by(metrics, "bank_cache_requests_total", "kind", "result")
    kinds = sorted({kind for kind, _ in grouped})
    out: dict[str, HitCounts] = {}
    for kind in kinds:
        hits = sum(grouped.get((kind, r), 0.0) for r in SERVED_FROM_CACHE)
        misses = sum(grouped.get((kind, r), 0.0) for r in SERVED_FROM_DATABASE)
        other = sum(v for (k, r), v in grouped.items()
                    if k == kind and r not in SERVED_FROM_CACHE + SERVED_FROM_DATABASE)
        out[kind] = HitCounts(hits, misses, other)
    return out


def other_results_by_kind(metrics: dict[SampleKey, float]) -> dict[str, dict[str, float]]:
    grouped = sum_by(metrics, "bank_cache_requests_total", "kind", "result")
    out: dict[str, dict[str, float]] = {}
    for (kind, result), value in grouped.items():
        if result not in ("hit", "miss") and value:  # the detail behind the rate
            out.setdefault(kind, {})[result] = value
    return out


def stale_rejects_by_kind(metrics: dict[SampleKey, float]) -> dict[str, float]:
    grouped = sum_by(metrics, "bank_cache_writes_total", "kind", "outcome")
    return {kind: v for (kind, outcome), v in grouped.items() if outcome == "stale_rejected"}


def session_checks(metrics: dict[SampleKey, float]) -> HitCounts | None:
    """The request gates' session checks (bank_session_checks_total): redis_hit is a hit,
    confirmed (PostgreSQL vouched for a missing or stale entry) a miss, the rest is other."""
    grouped = sum_by(metrics, "bank_session_checks_total", "outcome")
    if not grouped:
        return None
    hits = grouped.get(("redis_hit",), 0.0)
    misses = grouped.get(("confirmed",), 0.0)
    return HitCounts(hits, misses, sum(grouped.values()) - hits - misses)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {le: count}: linear
    interpolation inside the bucket that holds the rank; None without observations."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # past the largest finite bucket: its bound is all we know
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


def event_lag_buckets(metrics: dict[SampleKey, float]) -> dict[float, float]:
    """bank_event_lag_seconds' bucket increases summed over replicas, by upper bound."""
    grouped = sum_by(metrics, "bank_event_lag_seconds_bucket", "le")
    return {float(le): n for (le,), n in grouped.items() if le}


def events_by_outcome(metrics: dict[SampleKey, float]) -> dict[str, float]:
    return {o: n for (o,), n in sum_by(metrics, "bank_events_total", "outcome").items() if n}


def db_queries_by_service(metrics: dict[SampleKey, float]) -> dict[str, float]:
    return {service: v for (service,), v in
            sum_by(metrics, "bank_db_queries_total", "service").items() if v}


def client_hit_rate(result: PhaseResult, ops: tuple[Op, ...] = READS) -> float | None:
    """Share of reads the services answered from the cache, as the replies said (`source`)."""
    cache = sum(result.histogram(op.value, "cache").count for op in ops)
    database = sum(result.histogram(op.value, "database").count for op in ops)
    return ratio(cache, cache + database)


def redis_hit_rate(phase: MixedPhase) -> float | None:
    hits = phase.redis_after.keyspace_hits - phase.redis_before.keyspace_hits
    misses = phase.redis_after.keyspace_misses - phase.redis_before.keyspace_misses
    return ratio(hits, hits + misses)


def without_logins(result: PhaseResult) -> LatencyHistogram:
    out = LatencyHistogram()
    for (op, _source), hist in result.latency.items():
        if op != LOGIN:
            out.merge(hist)
    return out


def step_ok(step: Step, percentile: float, goal_s: float) -> bool:
    result = step.result
    total = result.completed + result.error_count
    if not result.completed or result.error_count > MAX_ERROR_SHARE * total:
        return False
    return result.histogram().percentile_s(percentile) <= goal_s


def best_step(steps: list[Step], percentile: float, goal_s: float) -> Step | None:
    """The highest throughput among the steps that kept the latency goal."""
    good = [s for s in steps if step_ok(s, percentile, goal_s)]
    return max(good, key=lambda s: s.result.throughput, default=None)


def step_at(steps: list[Step], concurrency: int) -> Step | None:
    return next((s for s in steps if s.concurrency == concurrency), None)


@dataclass(frozen=True)
class Comparison:
    """The design's headline figures, cache off against on."""

    data_statements_off: float | None
    data_statements_on: float | None
    avg_off_s: float | None
    avg_on_s: float | None
    read_avg_off_s: float | None
    read_avg_on_s: float | None

    @property
    def db_reduction(self) -> float | None:
        return reduction(self.data_statements_off, self.data_statements_on)

    @property
    def speed_up(self) -> float | None:
        return ratio(self.avg_off_s, self.avg_on_s)

    @property
    def read_speed_up(self) -> float | None:
        return ratio(self.read_avg_off_s, self.read_avg_on_s)


def _reads(result: PhaseResult) -> LatencyHistogram:
    out = LatencyHistogram()
    for op in READS:
        out.merge(result.histogram(op.value))
    return out


def compare(run: BenchRun) -> Comparison:
    off, on = run.phase(False), run.phase(True)

    def stmts(phase: MixedPhase | None) -> float | None:
        return phase.db_rate("data_statements") if phase else None

    def avg(phase: MixedPhase | None) -> float | None:
        return phase.result.histogram().mean_s if phase else None

    def read_avg(phase: MixedPhase | None) -> float | None:
        return _reads(phase.result).mean_s if phase else None

    return Comparison(stmts(off), stmts(on), avg(off), avg(on), read_avg(off), read_avg(on))


def statement_counts(phase: MixedPhase) -> StatementCounts:
    """PostgreSQL's statements of a mixed phase's window, by kind (bench/statements.py)."""
    return StatementCounts.of(phase.db_after.statement_deltas(phase.db_before))


def grpc_ok(metrics: dict[SampleKey, float], method: str) -> float:
    return sum_by(metrics, "bank_grpc_requests_total", "method", "code").get((method, "OK"), 0.0)


def statements_per_login(phase: MixedPhase) -> float | None:
    """The login's own statements (credentials, the new session, the attempt counters) per
    login; BEGIN/COMMIT not counted."""
    logins = grpc_ok(phase.metrics, "Login")
    counts = statement_counts(phase)
    login_statements = counts.total(what=("logins: credentials", "logins: new session",
                                          "logins: attempt counters"))
    return login_statements / logins if logins else None


def hit_rate(phase: MixedPhase | None, kind: str) -> float | None:
    if phase is None:
        return None
    counts = cache_hits_by_kind(phase.metrics).get(kind)
    return counts.hit_rate if counts else None


def best_transfer_step(run: BenchRun) -> Step | None:
    """The transfer maximum, or (no step kept the goal) the fastest step, for the CPU figures."""
    best = best_step(run.transfer_steps, 95, run.transfer_p95_goal_s)
    if best is None and run.transfer_steps:
        best = max(run.transfer_steps, key=lambda s: s.result.throughput)
    return best


def server_errors(result: PhaseResult) -> int:
    """Requests answered with a 5xx (or, over gRPC, a server-side status)."""
    server_side = ("http 5", "grpc UNAVAILABLE", "grpc INTERNAL", "grpc UNKNOWN",
                   "grpc DEADLINE_EXCEEDED", "grpc DATA_LOSS")
    return sum(n for (_, kind), n in result.errors.items() if kind.startswith(server_side))
