"""The run's numbers and `report.md`: availability per fault window, the longest degraded span per
fault, the staleness non-writers saw, the cache's catch-up after each fault, the checks."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos.invariants import Check
from chaos.profiles import Profile
from chaos.schedule import DESCRIPTIONS
from chaos.stack import FaultRecord
from chaos.workload import Op, ReadSample
from devstack.supervisor import Restart

# A request this slow counts as degraded even when it succeeded.
SLOW_S = 1.0
# A fault's window runs from its start to this long after it ended.
AFTER_S = 2.0


@dataclass(frozen=True)
class WindowStats:
    requests: int
    ok: int
    p50_s: float
    p99_s: float
    longest_degraded_s: float
    by_kind: dict[str, tuple[int, int]]  # kind -> (ok, requests)

    @property
    def availability(self) -> float:
        return self.ok / self.requests if self.requests else math.nan


def window_stats(ops: Sequence[Op], start: float, end: float) -> WindowStats:
    inside = [op for op in ops if start <= op.started < end]
    latencies = sorted(op.latency_s for op in inside)
    by_kind: dict[str, tuple[int, int]] = {}
    for op in inside:
        ok, total = by_kind.get(op.kind, (0, 0))
        by_kind[op.kind] = (ok + op.ok, total + 1)
    return WindowStats(len(inside), sum(op.ok for op in inside), _quantile(latencies, 0.5),
                       _quantile(latencies, 0.99), longest_degraded_span(inside), by_kind)


def longest_degraded_span(ops: Sequence[Op]) -> float:
    """The longest stretch of time covered by requests that failed or took over SLOW_S,
    overlapping ones merged."""
    spans = sorted((op.started, op.ended) for op in ops
                   if not op.ok or op.latency_s > SLOW_S)
    longest, current_start, current_end = 0.0, None, 0.0
    for start, end in spans:
        if current_start is None or start > current_end:
            if current_start is not None:
                longest = max(longest, current_end - current_start)
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        longest = max(longest, current_end - current_start)
    return longest


@dataclass(frozen=True)
class Staleness:
    reads: int
    stale_reads: int  # a newer version had been committed before the read started
    worst_s: float
    p99_s: float
    worst_at: float | None  # when the worst stale read started


def non_writer_staleness(reads: Sequence[ReadSample],
                         superseded_at: Callable[[str, int], float | None]) -> Staleness:
    """Reads that passed the writer check (the newer version, if any, came from a transfer
    into the account: the reader did not write it): how long before the read began PostgreSQL
    had a newer version than the one returned."""
    samples = []
    for read in reads:
        if read.version < read.floor:
            continue  # a writer violation, checked apart
        newer = superseded_at(read.account_id, read.version)
        if newer is not None and newer < read.started:
            samples.append((read.started - newer, read.started))
    ordered = sorted(s for s, _ in samples)
    worst = max(samples, default=(0.0, None))
    return Staleness(len(reads), len(samples), worst[0], _quantile(ordered, 0.99), worst[1])


@dataclass
class RunResult:
    seed: int
    profile: Profile
    started: float  # monotonic, the fault phase's start
    faults: list[FaultRecord]
    cache_catch_up: list[float | None]  # per fault
    ops: list[Op]
    staleness: Staleness
    checks: list[Check]
    restarts: list[Restart]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def render(result: RunResult) -> str:
    t0 = result.started
    lines = [
        f"# Chaos run, seed {result.seed} ({result.profile.name} profile)",
        "",
        f"Replay: `python -m chaos --seed {result.seed} --profile {result.profile.name}`"
        " (the same faults, targets and lengths; the timing of the system under them varies).",
        "",
        f"Result: **{'all checks passed' if result.passed else 'CHECKS FAILED'}**. "
        f"{len(result.faults)} faults, {len(result.ops)} requests through the edge, "
        f"{result.profile.users} users.",
        "",
        "## Checks",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {c.name} | {c.summary()} |" for c in result.checks),
        "",
        "## Faults",
        "",
        f"Window: from the fault's start to {AFTER_S:g} s after it ended (the node or replica back,"
        " failed over, or answering). Availability: requests served as promised (2xx; a revoked"
        f" token refused) over requests started in the window. Degraded: a failed request or one"
        f" slower than {SLOW_S:g} s; the longest span is the longest stretch such requests cover."
        " Cache: seconds after the fault ended until no cached balance was older than PostgreSQL"
        " at that moment.",
        "",
        "| # | fault | target | at s | lasted s | requests | availability | transfers | reads"
        " | p99 s | longest degraded span s | cache caught up after s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record, caught_up in zip(result.faults, result.cache_catch_up, strict=True):
        stats = window_stats(result.ops, record.started, record.ended + AFTER_S)
        lines.append(
            f"| {record.planned.index} | {DESCRIPTIONS[record.planned.kind]}"
            f"{' (' + record.note + ')' if record.note else ''} | {record.target}"
            f" | {record.started - t0:.1f} | {record.ended - record.started:.1f}"
            f" | {stats.requests} | {_percent(stats.availability)}"
            f" | {_kind(stats, 'transfer')} | {_kind(stats, 'read')} | {stats.p99_s:.2f}"
            f" | {stats.longest_degraded_s:.2f}"
            f" | {'not within 10 s' if caught_up is None else f'{caught_up:.2f}'} |")
    baseline = _outside(result)
    staleness = result.staleness
    worst_at = ("" if staleness.worst_at is None
                else f", at {staleness.worst_at - t0:.1f} s")
    lines += [
        "",
        f"Outside the fault windows: {baseline.requests} requests, availability"
        f" {_percent(baseline.availability)}, p50 {baseline.p50_s * 1000:.0f} ms, p99"
        f" {baseline.p99_s * 1000:.0f} ms.",
        "",
        "Answers not served as promised, by kind and HTTP status (0: no answer): "
        + (", ".join(f"{kind} {status}: {n}" for (kind, status), n in
                     sorted(collections.Counter((op.kind, op.status) for op in result.ops
                                                if not op.ok).items()))
           or "none") + ".",
        "",
        "## Staleness seen by non-writers",
        "",
        f"{staleness.stale_reads} of {staleness.reads} balance reads returned a version older than"
        " one PostgreSQL already had when the read started (a transfer into the account by someone"
        f" else). Longest: {staleness.worst_s:.2f} s{worst_at}; 99th percentile of those"
        f" {staleness.p99_s:.2f} s. (PostgreSQL's versions were polled every 100 ms: a staleness"
        " is known to within that.)",
        "",
        "## Restarts by the supervisor",
        "",
        *([f"- {r.name}: pid {r.old_pid} -> {r.new_pid}, down {r.after_s:.1f} s"
           for r in result.restarts] or ["- none"]),
    ]
    if result.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def write(result: RunResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.md"
    path.write_text(render(result))
    return path


def _outside(result: RunResult) -> WindowStats:
    windows = [(r.started, r.ended + AFTER_S) for r in result.faults]
    outside = [op for op in result.ops
               if not any(start <= op.started < end for start, end in windows)]
    return window_stats(outside, -math.inf, math.inf)


def _kind(stats: WindowStats, kind: str) -> str:
    ok, total = stats.by_kind.get(kind, (0, 0))
    return f"{ok}/{total}" if total else "-"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f} %"


def _quantile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
