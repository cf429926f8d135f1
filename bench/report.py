"""The run's report in Markdown: the design's table with our numbers, then the details."""

from __future__ import annotations

import math

from bench.analysis import (
    best_step,
    cache_hits_by_kind,
    db_queries_by_service,
    event_lag_buckets,
    events_by_outcome,
    histogram_quantile,
    other_results_by_kind,
    redis_hit_rate,
    session_checks,
    stale_rejects_by_kind,
)
from bench.goals import goals, headline
from bench.histogram import LatencyHistogram
from bench.model import BenchRun, MixedPhase, PhaseResult, Step
from bench.observe import sum_by
from bench.report_db import hot_account, statements_by_kind, transfer_time
from bench.tables import (
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    markdown_table,
    ratio,
    reduction,
)
from bench.workload import Op

_OPS = (Op.BALANCE, Op.RECENT, Op.TRANSFER, Op.LOGIN)


def _latency_cells(hist: LatencyHistogram) -> list[str]:
    return [f"{hist.count:,}", fmt_ms(hist.mean_s), fmt_ms(hist.percentile_s(50)),
            fmt_ms(hist.percentile_s(99))]


def latency_rows(off: PhaseResult | None, on: PhaseResult | None) -> list[list[str]]:
    """Per operation: cache off, then cache on split into hit and miss, then the speed-up."""
    rows: list[list[str]] = []
    for op in _OPS:
        name = op.value
        off_all = off.histogram(name) if off else LatencyHistogram()
        on_all = on.histogram(name) if on else LatencyHistogram()
        if not off_all.count and not on_all.count:
            continue
        speed_up = ratio(off_all.mean_s, on_all.mean_s) if off_all.count and on_all.count else None
        reads = op in (Op.BALANCE, Op.RECENT)
        lines: list[tuple[str, LatencyHistogram]] = [("cache off", off_all)] if off else []
        if on is not None:
            if reads:
                lines += [("cache on: hit", on.histogram(name, "cache")),
                          ("cache on: miss", on.histogram(name, "database"))]
            lines.append(("cache on: all", on_all))
        for i, (label, hist) in enumerate(lines):
            last = i == len(lines) - 1
            rows.append([name if i == 0 else "", label, *_latency_cells(hist),
                         f"{speed_up:.1f}x" if last and speed_up else ""])
    return rows


def _phase_table(run: BenchRun) -> str:
    off, on = run.phase(False), run.phase(True)
    rows = latency_rows(off.result if off else None, on.result if on else None)
    return markdown_table(["operation", "served", "requests", "avg ms", "p50 ms", "p99 ms",
                           "speed-up (avg)"], rows, right_align_from=2)


def _hit_rate_table(phase: MixedPhase) -> str:
    kinds = cache_hits_by_kind(phase.metrics)
    others = other_results_by_kind(phase.metrics)
    stale = stale_rejects_by_kind(phase.metrics)
    rows = []
    for kind, counts in kinds.items():
        other = ", ".join(f"{r} {v:,.0f}" for r, v in sorted(others.get(kind, {}).items()))
        rows.append([kind, f"{counts.hits:,.0f}", f"{counts.misses:,.0f}", other or "",
                     f"{stale.get(kind, 0):,.0f}", fmt_pct(counts.hit_rate)])
    gate = session_checks(phase.metrics)
    if gate is not None:
        outcomes = sum_by(phase.metrics, "bank_session_checks_total", "outcome")
        other = ", ".join(f"{o} {n:,.0f}" for (o,), n in sorted(outcomes.items())
                          if n and o not in ("redis_hit", "confirmed"))
        rows.append(["session check (request gate, Lua)", f"{gate.hits:,.0f}",
                     f"{gate.misses:,.0f}", other, "", fmt_pct(gate.hit_rate)])
    redis_hits = phase.redis_after.keyspace_hits - phase.redis_before.keyspace_hits
    redis_misses = phase.redis_after.keyspace_misses - phase.redis_before.keyspace_misses
    rows.append(["Redis INFO keyspace (every key)", f"{redis_hits:,}", f"{redis_misses:,}", "",
                 "", fmt_pct(redis_hit_rate(phase))])
    for op in (Op.BALANCE, Op.RECENT):
        cache = phase.result.histogram(op.value, "cache").count
        database = phase.result.histogram(op.value, "database").count
        if cache or database:
            rows.append([f"replies' source: {op.value}", f"{cache:,}", f"{database:,}", "", "",
                         fmt_pct(ratio(cache, cache + database))])
    return markdown_table(["key kind", "hits", "misses", "other results", "stale rejects",
                           "hit rate"], rows)


def _db_table(run: BenchRun) -> str:
    off, on = run.phase(False), run.phase(True)
    rows = []
    for label, attr in (("data statements/s (SELECT, INSERT, UPDATE, ...)", "data_statements"),
                        ("all statements/s (with BEGIN/COMMIT)", "statements"),
                        ("transactions/s", "transactions"),
                        ("rows returned/s", "rows_returned"),
                        ("rows written/s", "rows_written")):
        a = off.db_rate(attr) if off else None
        b = on.db_rate(attr) if on else None
        change = reduction(a, b)
        rows.append([label, fmt_rate(a), fmt_rate(b),
                     f"{fmt_pct(change)} less" if change is not None else "–"])
    by_service = [_per_service(off), _per_service(on)]
    if any(by_service):
        rows.append(["bank_db_queries_total/s by service", by_service[0] or "–",
                     by_service[1] or "–", ""])
    return markdown_table(["PostgreSQL (pg_stat_statements, pg_stat_database)", "cache off",
                           "cache on", "change"], rows)


def _per_service(phase: MixedPhase | None) -> str:
    if phase is None:
        return ""
    counts = sorted(db_queries_by_service(phase.metrics).items())
    return ", ".join(f"{service} {n / phase.window_s:,.0f}" for service, n in counts)


def _busiest_statements(run: BenchRun) -> list[str]:
    """What still reaches PostgreSQL with the cache on: the design's table in one glance."""
    out: list[str] = []
    for phase in run.mixed:
        busiest = phase.db_after.busiest_since(phase.db_before)
        if not busiest:
            continue
        rows = [["`" + query.replace("|", "\\|")[:110] + "`", f"{calls / phase.window_s:,.1f}",
                 f"{rows / max(calls, 1):,.1f}"] for calls, rows, query in busiest]
        out += [f"Busiest statements, cache {'on' if phase.cache_enabled else 'off'}:", "",
                markdown_table(["statement", "calls/s", "rows/call"], rows), ""]
    return out


def _grpc_calls_table(run: BenchRun) -> list[str]:
    """Which hops a request makes: gRPC calls/s by service and method, cache off and on."""
    rates: dict[tuple[str, str], list[float]] = {}
    for i, phase in enumerate(run.mixed):
        calls = sum_by(phase.metrics, "bank_grpc_requests_total", "service", "method")
        for (service, method), n in calls.items():
            if n:
                rates.setdefault((service, method), [0.0] * len(run.mixed))[i] = n / phase.window_s
    if not rates:
        return []
    headers = ["service", "method"] + [f"calls/s, cache {'on' if p.cache_enabled else 'off'}"
                                       for p in run.mixed]
    rows = [[service, method, *(fmt_rate(v) for v in values)]
            for (service, method), values in sorted(rates.items())]
    return ["gRPC calls behind the requests (bank_grpc_requests_total):", "",
            markdown_table(headers, rows, right_align_from=2), ""]


def _events(run: BenchRun) -> list[str]:
    """Balance-changed events: what happened to them and how long commit-to-apply took."""
    lines: list[str] = []
    for phase in run.mixed:
        outcomes = events_by_outcome(phase.metrics)
        if not outcomes:
            continue
        buckets = event_lag_buckets(phase.metrics)
        p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
        counts = ", ".join(f"{o} {n / phase.window_s:,.1f}/s" for o, n in sorted(outcomes.items()))
        lines.append(f"- cache {'on' if phase.cache_enabled else 'off'}: {counts}; commit-to-apply "
                     f"lag p50 {fmt_ms(p50)} ms, p99 {fmt_ms(p99)} ms (bank_event_lag_seconds).")
    return ["Balance-changed events (bank_events_total):", "", *lines, ""] if lines else []


def _redis_table(run: BenchRun) -> str:
    rows = []
    for phase in run.mixed:
        window = phase.window_s
        commands = phase.redis_after.commands - phase.redis_before.commands
        rows.append([f"cache {'on' if phase.cache_enabled else 'off'}",
                     fmt_bytes(phase.redis_after.used_memory_masters),
                     fmt_bytes(phase.redis_after.used_memory_all),
                     f"{phase.redis_after.keys:,}", fmt_rate(commands / window)])
    return markdown_table(["after the phase", "used_memory (masters)", "used_memory (all 6)",
                           "keys", "commands/s"], rows)


def _steps_table(steps: list[Step], percentile: float, goal_s: float) -> str:
    rows = []
    best = best_step(steps, percentile, goal_s)
    for step in steps:
        hist = step.result.histogram()
        other = (f"{step.server.other_cores:.2f}" if step.server is not None
                 and not math.isnan(step.server.other_cores) else "–")
        rows.append([str(step.concurrency), fmt_rate(step.result.throughput),
                     fmt_ms(hist.percentile_s(50)), fmt_ms(hist.percentile_s(95)),
                     fmt_ms(hist.percentile_s(99)), f"{step.result.error_count:,}", other,
                     "<- max" if step is best else ""])
    return markdown_table(["concurrent", "per s", "p50 ms", "p95 ms", "p99 ms", "errors",
                           "other processes' cores", ""], rows)


def _errors(run: BenchRun) -> list[str]:
    lines = []
    phases: list[PhaseResult] = [m.result for m in run.mixed]
    phases += [s.result for s in run.read_steps] + [s.result for s in run.transfer_steps]
    for result in phases:
        if result.errors or result.dropped:
            kinds = ", ".join(f"{op} {kind}: {n:,}" for (op, kind), n in
                              sorted(result.errors.items(), key=lambda kv: -kv[1])[:6])
            dropped = (f"; {result.dropped:,} arrivals dropped by the client"
                       if result.dropped else "")
            lines.append(f"- {result.name}: {kinds}{dropped}")
    return lines


def build_report(run: BenchRun, chart_name: str | None = "chart.png") -> str:
    off, on = run.phase(False), run.phase(True)
    services = ", ".join(f"{name} x{n}" for name, n in run.services.items()) or "none"
    parts = [
        f"# Benchmark report, {run.started_at}{' (--quick)' if run.quick else ''}",
        "",
        f"- Path measured: **{run.path}**.",
        f"- Services answering: {services}.",
        f"- Workload: {run.users:,} users, Zipf exponent {run.zipf_exponent:g} over users "
        f"(and accounts); mix {run.mix} (reads {run.read_share:.0%}).",
        f"- Mixed phases: {run.arrivals or 'open loop'}.",
        f"- Machine: 2 cores shared by the load generator, the services, PostgreSQL and Redis. "
        f"Whole run: {run.elapsed_s:.0f} s.",
        "",
        "## The design's table, measured",
        "",
        headline(run),
        "",
        "The design's \"90 % less database load\" is about reads: transfers and logins write, "
        "and their writes reach PostgreSQL whatever the cache, so the goal is judged on the "
        "reads the cache serves (balance, recent transactions, account details, loans, and the "
        "warm-ups after login that stand in for their first misses), counted by PostgreSQL "
        "itself (pg_stat_statements); every statement is shown beside it.",
        "",
        "## Goals",
        "",
        markdown_table(["goal", "target", "measured", ""], goals(run)),
        "",
    ]
    if run.mixed:
        rate = run.mixed[0].rate
        seconds = run.mixed[0].result.measured_s
        parts += [
            f"## Latency per operation (open loop, {rate:g} req/s, {seconds:g} s measured per "
            "phase)",
            "",
            "Latency counts from each request's scheduled start (open loop), so queueing in the "
            "client or the servers is included.",
            "",
            _phase_table(run),
            "",
        ]
    for phase in (p for p in (on, off) if p is not None):
        parts += [f"## Cache requests by key kind (cache {'on' if phase.cache_enabled else 'off'})",
                  "", _hit_rate_table(phase), ""]
    if run.mixed:
        parts += ["## Database load", "", _db_table(run), "", *statements_by_kind(run),
                  *_busiest_statements(run),
                  *_grpc_calls_table(run), *_events(run),
                  "## Redis", "", _redis_table(run), ""]
    if run.read_steps:
        parts += [f"## Maximum cached balance reads (closed loop, p99 <= "
                  f"{run.read_p99_goal_s * 1000:g} ms)", "",
                  _steps_table(run.read_steps, 99, run.read_p99_goal_s), ""]
    if run.transfer_steps:
        parts += [f"## Maximum transfers (closed loop, p95 <= "
                  f"{run.transfer_p95_goal_s * 1000:g} ms)", "",
                  _steps_table(run.transfer_steps, 95, run.transfer_p95_goal_s), ""]
    transfer_lines = transfer_time(run)
    if transfer_lines:
        parts += ["## Where a transfer's time goes", "", *transfer_lines]
    hot_lines = hot_account(run)
    if hot_lines:
        parts += ["## Hot account", "", *hot_lines]
    parts += ["## Baselines: the raw servers, same run", "", _baselines(run), ""]
    profiles = _profiles(run)
    if profiles:
        parts += ["## Where the time goes (py-spy, on-CPU samples by the function on top of the "
                  "stack)", "",
                  "`Runner.run (asyncio/runners.py)` is the event loop itself: time in uvloop's "
                  "and gRPC's C code (sockets, callbacks), which py-spy without --native charges "
                  "to the frame that started the loop. Raw stacks: results/.work/profiles/.", "",
                  *profiles]
    errors = _errors(run)
    if errors:
        parts += ["## Errors", "", *errors, ""]
    parts += ["## Notes", "", *_notes(run), ""]
    if chart_name:
        parts += [f"![latency over time, hit rate, database QPS, cache off vs on]({chart_name})",
                  ""]
    return "\n".join(parts)


def _profiles(run: BenchRun) -> list[str]:
    out: list[str] = []
    for context, summary in run.profiles:
        if not summary.samples:
            continue
        areas = ", ".join(f"{area} {share:.0%}" for share, area in summary.areas[:8])
        rows = [[f"`{function}`", f"{share:.1%}"] for share, function in summary.top_functions]
        out += [f"**{summary.name}** during {context} ({summary.samples:,} samples): {areas}.",
                "", markdown_table(["function (file)", "self"], rows), ""]
    return out


def _baselines(run: BenchRun) -> str:
    b = run.baselines
    reads = best_step(run.read_steps, 99, run.read_p99_goal_s)
    transfers = best_step(run.transfer_steps, 95, run.transfer_p95_goal_s)
    read_ratio = ratio(reads.result.throughput if reads else None, b.redis_get_rps)
    transfer_ratio = ratio(transfers.result.throughput if transfers else None, b.pgbench_tps)
    rows = [
        ["pgbench tpcb-like", f"{fmt_rate(b.pgbench_tps)} TPS",
         f"avg {b.pgbench_latency_ms:.2f} ms" if b.pgbench_latency_ms else "", b.pgbench_setup,
         f"transfers {transfer_ratio:.2f}x" if transfer_ratio else "–"],
        ["redis-benchmark GET", f"{fmt_rate(b.redis_get_rps)} rps",
         f"p50 {b.redis_get_p50_ms} ms, p99 {b.redis_get_p99_ms} ms"
         if b.redis_get_rps else "", b.redis_setup,
         f"balance reads {read_ratio:.3f}x" if read_ratio else "–"],
    ]
    table = markdown_table(["server alone", "throughput", "latency", "how", "ours as a ratio"],
                           rows, right_align_from=5)
    if b.errors:
        table += "\n\n" + "\n".join(f"- {e}" for e in b.errors)
    return table


def _notes(run: BenchRun) -> list[str]:
    notes = [f"- {n}" for n in run.notes]
    for phase in run.mixed:
        if phase.cpu_before is not None and phase.cpu_after is not None:
            busy, ours = phase.cpu_after.cores_since(phase.cpu_before)
            if not math.isnan(busy):
                notes.append(
                    f"- {phase.result.name}: the machine's CPUs were busy {busy:.2f} of 2 cores on "
                    f"average, {ours:.2f} of them this run (stack + load generator), "
                    f"{max(0.0, busy - ours):.2f} other processes (e.g. test suites running at "
                    "the same time: compare phases only when this is small).")
        result = phase.result
        cores = result.client_cpu_s / (result.measured_s + 1e-9)
        notes.append(f"- {result.name}: the load generator used {result.client_cpu_s:.1f} CPU s "
                     f"(~{cores:.2f} cores over the phase); services restarted in "
                     f"{phase.restart_s:.1f} s before it." if phase.restart_s else
                     f"- {result.name}: the load generator used {result.client_cpu_s:.1f} CPU s.")
    steps = run.read_steps + run.transfer_steps
    if steps:
        cpu = sum(s.result.client_cpu_s for s in steps)
        wall = sum(s.result.measured_s for s in steps)
        notes.append(f"- closed-loop steps: the load generator used {cpu:.1f} CPU s in "
                     f"{wall:.0f} s measured (~{cpu / max(wall, 1e-9):.2f} of the 2 cores).")
    notes.append("- The per-user rate limit (100/min) runs on every request with its "
                 "threshold raised out of reach: the bench's hottest users send several requests "
                 "a second.")
    return notes
