"""The chaos run's pure parts: a seed gives one schedule, every kind of fault comes first, a master
is left down once at most; the degraded span and the staleness are computed as the report says."""

from __future__ import annotations

import itertools

from chaos.profiles import LONG, SHORT
from chaos.report import longest_degraded_span, non_writer_staleness, window_stats
from chaos.schedule import FaultKind, schedule
from chaos.workload import Op, ReadSample


def test_a_seed_gives_one_schedule_with_every_kind_first() -> None:
    first = list(itertools.islice(schedule(7, SHORT), 20))
    assert first == list(itertools.islice(schedule(7, SHORT), 20))
    assert first != list(itertools.islice(schedule(8, SHORT), 20))
    assert {f.kind for f in first[:len(FaultKind)]} == set(FaultKind)
    for fault in first:
        assert SHORT.gap_s[0] <= fault.gap_s <= SHORT.gap_s[1]
        assert SHORT.length_s[0] <= fault.length_s <= SHORT.length_s[1]
        assert 0 <= fault.pick < 1


def test_a_master_is_left_down_once_per_run_at_most() -> None:
    for seed in range(50):
        kinds = [f.kind for f in itertools.islice(schedule(seed, LONG), 60)]
        assert kinds.count(FaultKind.REDIS_MASTER_LOSS) == 1


def op(started: float, ended: float, status: int = 200, kind: str = "read") -> Op:
    return Op(kind, 0, started, ended, status)


def test_the_longest_degraded_span_merges_overlapping_failures_and_slow_requests() -> None:
    ops = [op(0.0, 0.1), op(1.0, 1.5, 503), op(1.4, 2.0, 0), op(1.9, 3.2),  # slow: 1.3 s
           op(5.0, 5.2, 503), op(3.3, 3.4)]
    assert longest_degraded_span(ops) == 3.2 - 1.0
    stats = window_stats(ops, 0.0, 10.0)
    assert (stats.requests, stats.ok) == (6, 3)  # slow is degraded, yet served
    assert stats.by_kind == {"read": (3, 6)}
    assert window_stats([op(0.0, 1.0, 401, "revoked_probe")], 0, 5).ok == 1


def test_staleness_is_how_long_a_newer_version_had_been_committed() -> None:
    committed = {("a", 3): 10.0, ("a", 4): 12.0}  # version 4 first seen at 10.0, 5 at 12.0

    def superseded_at(account: str, version: int) -> float | None:
        return committed.get((account, version))

    reads = [
        ReadSample(0, "a", "other", 10.5, 3, 0, 0.0, "CACHE"),  # 0.5 s stale
        ReadSample(0, "a", "other", 13.0, 4, 0, 0.0, "CACHE"),  # 1.0 s stale
        ReadSample(0, "a", "other", 9.0, 3, 0, 0.0, "CACHE"),  # not stale: 4 came later
        ReadSample(0, "a", "writer", 14.0, 3, 5, 13.0, "CACHE"),  # a writer violation
    ]
    staleness = non_writer_staleness(reads, superseded_at)
    assert (staleness.reads, staleness.stale_reads) == (4, 2)
    assert staleness.worst_s == 1.0 and staleness.worst_at == 13.0
