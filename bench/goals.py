"""The target table and the latency goals, against what a run measured (pure)."""

from __future__ import annotations

import math

from bench.analysis import (
    HitCounts,
    best_step,
    cache_hits_by_kind,
    client_hit_rate,
    compare,
    db_queries_by_service,
    step_at,
    without_logins,
)
from bench.model import BenchRun, MixedPhase
from bench.tables import (
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    markdown_table,
    ratio,
    reduction,
    verdict,
)
from bench.workload import Op

_GOAL_READS_PER_S = 2000.0
_GOAL_TRANSFERS_PER_S = 1000.0
_GOAL_PGBENCH_RATIO = 0.3
_GOAL_HIT_RATE = 0.95
_GOAL_DB_REDUCTION = 0.90
_PEAK_P50_S, _PEAK_P99_S = 0.002, 0.010


def _read_path_row(off: MixedPhase | None, on: MixedPhase | None) -> list[str]:
    """The account service's own database queries (bank_db_queries_total): the read path the
    cache serves, without the logins and transfers that reach PostgreSQL whatever the cache."""

    def rate(phase: MixedPhase | None) -> float | None:
        if phase is None:
            return None
        queries = db_queries_by_service(phase.metrics).get("account")
        return None if queries is None else queries / phase.window_s

    before, after = rate(off), rate(on)
    change = reduction(before, after)
    return ["  of which account service (reads)", "", fmt_rate(before), fmt_rate(after),
            f"{fmt_pct(change)} less" if change is not None else "–"]


def headline(run: BenchRun) -> str:
    """The design's table: what it promises, what we measured."""
    cmp = compare(run)
    on = run.phase(True)
    off = run.phase(False)
    kinds = cache_hits_by_kind(on.metrics) if on else {}
    balance = kinds.get("balance")
    hit_rate = balance.hit_rate if balance else (client_hit_rate(on.result, (Op.BALANCE,))
                                                 if on else None)
    rows = [
        ["balance hit rate", "> 90 %", "–", fmt_pct(hit_rate), ""],
        ["database statements/s", "90 % less", fmt_rate(cmp.data_statements_off),
         fmt_rate(cmp.data_statements_on),
         f"{fmt_pct(cmp.db_reduction)} less" if cmp.db_reduction is not None else "–"],
        _read_path_row(off, on),
        ["avg response, balance + history reads", "12x faster", fmt_ms(cmp.read_avg_off_s) + " ms",
         fmt_ms(cmp.read_avg_on_s) + " ms",
         f"{cmp.read_speed_up:.1f}x faster" if cmp.read_speed_up else "–"],
        ["avg response, all operations", "", fmt_ms(cmp.avg_off_s) + " ms",
         fmt_ms(cmp.avg_on_s) + " ms", f"{cmp.speed_up:.1f}x faster" if cmp.speed_up else "–"],
        ["Redis memory used (masters)", "", fmt_bytes(off.redis_after.used_memory_masters)
         if off else "–", fmt_bytes(on.redis_after.used_memory_masters) if on else "–", ""],
    ]
    return markdown_table(["", "design", "cache off", "cache on", "measured change"], rows)


def goals(run: BenchRun) -> list[list[str]]:
    on = run.phase(True)
    off = run.phase(False)
    cmp = compare(run)
    reads = best_step(run.read_steps, 99, run.read_p99_goal_s)
    at64 = step_at(run.read_steps, 64)
    transfers = best_step(run.transfer_steps, 95, run.transfer_p95_goal_s)
    pgbench = run.baselines.pgbench_tps
    rows: list[list[str]] = []

    read_rate = reads.result.throughput if reads else None
    via_edge = run.via == "edge"
    # The goal is for the edge path; another path's figure is shown but not judged. Steps that
    # all missed the latency bound miss the goal.
    reads_met = (None if not via_edge or not run.read_steps
                 else read_rate is not None and read_rate >= _GOAL_READS_PER_S)
    at64_text = (f"; at 64 concurrent {fmt_rate(at64.result.throughput)}/s, p99 "
                 f"{fmt_ms(at64.result.histogram().percentile_s(99))} ms") if at64 else ""
    rows.append(["cached balance reads through Envoy, session check + rate limit",
                 ">= 2,000/s at p99 <= 50 ms (64 concurrent)",
                 (f"{fmt_rate(read_rate)}/s" if read_rate is not None else
                  f"no step at p99 <= {run.read_p99_goal_s * 1000:g} ms")
                 + f" via {run.via}{at64_text}"
                 + ("" if via_edge else " (not the edge: not judged)"), verdict(reads_met)])
    if on is not None:
        peak = without_logins(on.result)
        every = on.result.histogram()
        p50, p99 = peak.percentile_s(50), peak.percentile_s(99)
        met = None if math.isnan(p99) else (p50 <= _PEAK_P50_S and p99 <= _PEAK_P99_S)
        rows.append([f"at the design's {on.rate:g} req/s (cache on, without logins)",
                     "p50 <= 2 ms, p99 <= 10 ms",
                     f"p50 {fmt_ms(p50)} ms, p99 {fmt_ms(p99)} ms (with logins: p50 "
                     f"{fmt_ms(every.percentile_s(50))}, p99 {fmt_ms(every.percentile_s(99))})",
                     verdict(met)])
    transfer_rate = transfers.result.throughput if transfers else None
    share = ratio(transfer_rate, pgbench)
    t_met = None if not run.transfer_steps else (
        transfer_rate is not None and transfer_rate >= _GOAL_TRANSFERS_PER_S
        and (share is None or share >= _GOAL_PGBENCH_RATIO))
    rows.append(["transfers", ">= 1,000/s at p95 <= 100 ms, >= 0.3x pgbench",
                 (f"{fmt_rate(transfer_rate)}/s" if transfer_rate is not None else
                  f"no step at p95 <= {run.transfer_p95_goal_s * 1000:g} ms")
                 + (f", {share:.2f}x pgbench ({fmt_rate(pgbench)} TPS)" if share else ""),
                 verdict(t_met)])
    kinds = cache_hits_by_kind(on.metrics) if on else {}
    balance: HitCounts | None = kinds.get("balance")
    rate = balance.hit_rate if balance else (client_hit_rate(on.result, (Op.BALANCE,))
                                             if on else None)
    rows.append(["balance hit rate", ">= 95 %", fmt_pct(rate),
                 verdict(None if rate is None else rate >= _GOAL_HIT_RATE)])
    cut = cmp.db_reduction
    rows.append(["database statements, cache on vs off", ">= 90 % fewer",
                 f"{fmt_pct(cut)} fewer" if cut is not None else "– (no cache-off phase)"
                 if off is None else "–",
                 verdict(None if cut is None else cut >= _GOAL_DB_REDUCTION)])
    return rows
