"""The measured results of one run, as plain data: the report and the chart read only these."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.baseline import TransferAlone
from bench.histogram import LatencyHistogram
from bench.observe import CpuSnapshot, DatabaseSnapshot, RedisSnapshot, SampleKey
from bench.pgprofile import PerfSummary, WaitShares
from bench.profiling import ProfileSummary
from bench.statements import StatementCounts


@dataclass
class SecondBin:
    """What finished (by scheduled time) in one second of a phase, for the charts."""

    count: int = 0
    errors: int = 0
    cache: int = 0
    database: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def merge(self, other: SecondBin) -> None:
        self.count += other.count
        self.errors += other.errors
        self.cache += other.cache
        self.database += other.database
        self.latency.merge(other.latency)


@dataclass
class PhaseResult:
    """Merged over workers. `latency` and `errors` cover the measured window (after warm-up);
    the timeline covers the whole phase."""

    name: str
    measured_s: float = 0.0
    latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    timeline: dict[int, SecondBin] = field(default_factory=dict)
    dropped: int = 0
    client_cpu_s: float = 0.0
    wall_start: float = 0.0

    def record(self, op: str, source: str, seconds: float) -> None:
        self.latency.setdefault((op, source), LatencyHistogram()).record(seconds)

    def merge(self, other: PhaseResult) -> None:
        self.measured_s = max(self.measured_s, other.measured_s)
        for key, hist in other.latency.items():
            self.latency.setdefault(key, LatencyHistogram()).merge(hist)
        for key, n in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + n
        for second, bin_ in other.timeline.items():
            self.timeline.setdefault(second, SecondBin()).merge(bin_)
        self.dropped += other.dropped
        self.client_cpu_s += other.client_cpu_s
        self.wall_start = other.wall_start or self.wall_start

    def histogram(self, op: str | None = None, source: str | None = None) -> LatencyHistogram:
        out = LatencyHistogram()
        for (o, s), hist in self.latency.items():
            if (op is None or o == op) and (source is None or s == source):
                out.merge(hist)
        return out

    @property
    def completed(self) -> int:
        return sum(h.count for h in self.latency.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.completed / self.measured_s if self.measured_s else 0.0


@dataclass
class MixedPhase:
    """The design's mix at a target rate, with the cache off or on, and what the servers saw."""

    cache_enabled: bool
    rate: float
    result: PhaseResult
    metrics: dict[SampleKey, float]  # increase of every service metric over the measured window
    metrics_endpoints: list[str]
    redis_before: RedisSnapshot
    redis_after: RedisSnapshot
    db_before: DatabaseSnapshot
    db_after: DatabaseSnapshot
    db_series: list[tuple[float, float]] = field(default_factory=list)
    restart_s: float = 0.0
    cpu_before: CpuSnapshot | None = None
    cpu_after: CpuSnapshot | None = None

    @property
    def window_s(self) -> float:
        return max(self.db_after.at - self.db_before.at, 1e-9)

    def db_rate(self, attribute: str) -> float:
        change = getattr(self.db_after, attribute) - getattr(self.db_before, attribute)
        return float(change) / self.window_s


@dataclass
class ServerSide:
    """What the servers did during a closed-loop step (transfers, the hot account)."""

    seconds: float
    transfers: float  # CreateTransfer calls answered OK (the services' metrics)
    cpu_s: dict[str, float]  # CPU seconds by process group (replicas apart)
    statements: StatementCounts
    deadlocks: int
    retries: float  # transfer_money run again after a deadlock or serialization failure
    transfer_money_ms: float | None  # its mean execution time inside PostgreSQL
    wal_flush_ms: float | None = None  # a WAL flush (commit) on average (pg_stat_wal)
    wal_flushes: int = 0
    transactions: int = 0  # committed or rolled back in the bench's database
    waits: WaitShares | None = None
    perf: PerfSummary | None = None
    # Cores the machine was busy on average, and how much of that was other processes than this
    # run's (other engineers' test suites take CPU from the stack on a shared machine).
    machine_cores: float = float("nan")
    other_cores: float = float("nan")

    def per_transfer(self, amount: float) -> float | None:
        return amount / self.transfers if self.transfers else None


@dataclass
class Step:
    """One closed-loop level of a maximum search."""

    concurrency: int
    result: PhaseResult
    server: ServerSide | None = None


@dataclass
class Baselines:
    pgbench_tps: float | None = None
    pgbench_latency_ms: float | None = None
    pgbench_setup: str = ""
    redis_get_rps: float | None = None
    redis_get_p50_ms: float | None = None
    redis_get_p99_ms: float | None = None
    redis_setup: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class BenchRun:
    started_at: str
    quick: bool
    path: str  # which path was measured, in words
    via: str
    services: dict[str, int]  # component -> replicas answering
    stack_lines: list[str]
    users: int
    zipf_exponent: float
    mix: str
    read_share: float
    arrivals: str = ""
    mixed: list[MixedPhase] = field(default_factory=list)
    read_steps: list[Step] = field(default_factory=list)
    transfer_steps: list[Step] = field(default_factory=list)
    # Transfers with `hot_share` of them touching one account (None: not run).
    hot: Step | None = None
    hot_share: float = 0.0
    # transfer_money alone on the idle server, just before the hot-account phase
    transfer_alone: TransferAlone | None = None
    baselines: Baselines = field(default_factory=Baselines)
    read_p99_goal_s: float = 0.050
    transfer_p95_goal_s: float = 0.100
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    # (what was running, the summary of one replica's samples)
    profiles: list[tuple[str, ProfileSummary]] = field(default_factory=list)
    # summary.json of an earlier run, for the before/after columns (bench/summary.py)
    before: dict[str, object] | None = None

    def phase(self, cache_enabled: bool) -> MixedPhase | None:
        return next((m for m in self.mixed if m.cache_enabled == cache_enabled), None)
