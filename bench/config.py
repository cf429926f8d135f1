"""What one benchmark run does. `--quick` keeps every phase, only shorter and smaller."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bench.workload import OperationMix

# The design's peak: 105 requests a second.
DESIGN_PEAK_RATE = 105.0
# Every phase, in the order a run makes them (`--phases` picks some).
PHASES = ("mixed", "reads", "transfers", "hot", "baseline")


@dataclass(frozen=True)
class BenchConfig:
    # "auto" picks the edge (Envoy) if it runs, else the gRPC services.
    via: str = "auto"
    # Who drives the closed-loop maxima through the edge: "auto" (wrk when installed), "wrk",
    # or "python" (the same generator as the mixed phases).
    load: str = "auto"
    users: int = 2000
    zipf_exponent: float = 1.0
    mix: OperationMix = dataclasses.field(default_factory=OperationMix.per_user_per_day)
    # Mixed workload, cache off then on: open-loop arrivals at this rate.
    rate: float = DESIGN_PEAK_RATE
    # "visits": users arrive (Poisson) and make their day's requests in a row, `think_seconds`
    # apart; "requests": every request is an independent arrival from a Zipf-chosen user (no
    # temporal locality: the cache's worst case for the same mix).
    arrivals: str = "visits"
    think_seconds: float = 1.0
    mixed_seconds: float = 45.0
    # Excluded from the figures of each mixed phase (connections, JIT-free warm paths, first fills
    # are still counted as misses in the hit rates of the services' metrics).
    warmup_seconds: float = 10.0
    # The cache-on phase starts from an empty cache, where a running system has entries of every
    # age: its warm-up lasts longer than the longest entry TTL with its jitter (recent
    # transactions: 120 s + 10 %), so the measured window sees the steady state.
    cache_warmup_seconds: float = 135.0
    # Closed-loop maxima: one step per concurrency level.
    read_concurrency: tuple[int, ...] = (8, 16, 32, 64, 128)
    transfer_concurrency: tuple[int, ...] = (4, 8, 16, 32, 64)
    # The hot-account phase: this many concurrent clients, and this share of the transfers
    # touching one account (half from it, half to it).
    hot_concurrency: int = 64
    hot_share: float = 0.7
    step_seconds: float = 8.0
    step_warmup_seconds: float = 1.0
    # Load generator processes for the closed-loop steps (the open-loop phase needs one).
    workers: int = 2
    pgbench_seconds: int = 15
    pgbench_scale: int = 10
    pgbench_clients: int = 16
    redis_benchmark_requests: int = 100_000
    redis_benchmark_clients: int = 50
    read_p99_goal_s: float = 0.050
    transfer_p95_goal_s: float = 0.100
    results_dir: Path = Path("results")
    run_dir: Path = Path(".run/bench")
    use_running: bool = False
    skip_baseline: bool = False
    production_argon2: bool = False
    # py-spy on one replica of each Python hop during the closed-loop step nearest 64 / 32
    profile: bool = True
    seed: int = 20260101
    quick: bool = False
    phases: tuple[str, ...] = PHASES
    # A summary.json of an earlier run (e.g. the code before a change): the report then shows
    # CPU per transfer and the statement counts before and after.
    before: Path | None = None

    @classmethod
    def quick_mode(cls, **overrides: object) -> BenchConfig:
        base = cls(
            users=300,
            mixed_seconds=5.0,
            warmup_seconds=1.0,
            cache_warmup_seconds=3.0,
            read_concurrency=(16, 64),
            transfer_concurrency=(8, 32),
            step_seconds=2.0,
            step_warmup_seconds=0.5,
            pgbench_seconds=3,
            pgbench_scale=2,
            redis_benchmark_requests=20_000,
            quick=True,
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
