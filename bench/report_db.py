"""The report's database and transfer sections (pure): statements by kind, where a transfer's
time goes (CPU per transfer by process, statements per transfer, PostgreSQL's waits and perf
profile), and the hot account with what bounds it."""

from __future__ import annotations

import math

from bench.analysis import best_transfer_step, server_errors, statement_counts
from bench.baseline import TransferAlone
from bench.cpu import by_role
from bench.model import BenchRun, ServerSide, Step
from bench.pgprofile import WaitShares
from bench.tables import fmt_ms, fmt_pct, fmt_rate, markdown_table


def statements_by_kind(run: BenchRun) -> list[str]:
    """Statements/s by what they are for, cache off vs on (bench/statements.py)."""
    phases = list(run.mixed)
    if not phases:
        return []
    counts = [statement_counts(p) for p in phases]
    keys = sorted({k for c in counts for k in c.calls if k[0] != "control"},
                  key=lambda k: (("read", "write", "background", "other").index(k[0])
                                 if k[0] in ("read", "write", "background", "other") else 9,
                                 k[1]))
    rows = [[kind, what, *(fmt_rate(c.calls.get((kind, what), 0) / p.window_s)
                           for c, p in zip(counts, phases, strict=True))]
            for kind, what in keys]
    headers = ["kind", "statements", *(f"/s, cache {'on' if p.cache_enabled else 'off'}"
                                       for p in phases)]
    return ["PostgreSQL statements by what they are for (pg_stat_statements, classified by "
            "bench/statements.py). Reads the cache serves are the first group; logins read "
            "their credentials and write a session, transfers write, whatever the cache:", "",
            markdown_table(headers, rows, right_align_from=2), ""]


def _before_map(run: BenchRun, concurrency: int, key: str) -> dict[str, float]:
    """A figure of the earlier run (--before) at the same concurrency: CPU per transfer grows
    when fewer transfers share the fixed costs, so only the same load compares."""
    before = run.before or {}
    steps = before.get("transfer_steps")
    part = steps.get(str(concurrency)) if isinstance(steps, dict) else None
    if not isinstance(part, dict):
        return {}
    values = part.get(key)
    return {str(k): float(v) for k, v in values.items()} if isinstance(values, dict) else {}


def _reference_step(run: BenchRun) -> Step | None:
    """The step CPU per transfer is shown for: the profiled one (the same concurrency in every
    run), else the transfer maximum."""
    profiled = next((s for s in run.transfer_steps if s.server and s.server.waits), None)
    return profiled or best_transfer_step(run)


def _waits_line(waits: WaitShares | None) -> str:
    if waits is None or not waits.samples:
        return ""
    parts = ", ".join(f"{state} {fmt_pct(share)}" for share, state in waits.shares[:6])
    return (f"PostgreSQL's active backends (pg_stat_activity every 20 ms, "
            f"{waits.busy_backends:.1f} active on average): {parts}.")


def _perf_lines(server: ServerSide) -> list[str]:
    perf = server.perf
    if perf is None or not perf.top:
        return []
    rows = [[f"`{name}`", fmt_pct(share)] for share, name in perf.top]
    return [f"perf, PostgreSQL's processes on CPU ({perf.samples_note}):", "",
            markdown_table(["function (process)", "samples"], rows), ""]


def transfer_time(run: BenchRun) -> list[str]:
    """CPU per transfer by process and statements per transfer at the profiled step."""
    best = _reference_step(run)
    if best is None or best.server is None or not best.server.transfers:
        return []
    server = best.server
    cpu = by_role(server.cpu_s)
    before_cpu = _before_map(run, best.concurrency, "cpu_ms_per_transfer")
    rows = []
    for role, used in sorted(cpu.items(), key=lambda kv: -kv[1]):
        ms = used * 1000 / server.transfers
        if ms < 0.001 and role not in before_cpu:
            continue
        row = [role, f"{ms:.3f}", f"{used / server.seconds:.2f}"]
        if before_cpu:
            row.insert(1, f"{before_cpu[role]:.3f}" if role in before_cpu else "–")
        rows.append(row)
    client = best.result.client_cpu_s * 1000 / max(best.result.completed, 1)
    total = sum(cpu.values()) * 1000 / server.transfers
    total_row = ["all of the stack", f"{total:.3f}", f"{sum(cpu.values()) / server.seconds:.2f}"]
    if before_cpu:
        total_row.insert(1, f"{sum(before_cpu.values()):.3f}")
    rows.append(total_row)
    headers = ["process", "CPU ms per transfer", "cores"]
    if before_cpu:
        headers = ["process", "before: CPU ms per transfer", "after", "cores"]
    lines = [f"At {best.concurrency} concurrent clients (the profiled step, "
             f"{fmt_rate(best.result.throughput)}/s; CPU from /proc over {server.seconds:.0f} s, "
             f"{fmt_rate(server.transfers)} transfers answered; the load generator: "
             f"{client:.3f} ms per request more):", "", markdown_table(headers, rows), ""]
    before_statements = _before_map(run, best.concurrency, "statements_per_transfer")
    statement_rows = []
    for (kind, what), n in sorted(server.statements.calls.items(), key=lambda kv: -kv[1]):
        label = f"{kind}: {what}"
        row = [label, f"{n / server.transfers:.3f}"]
        if before_statements:
            row.insert(1, f"{before_statements[label]:.3f}" if label in before_statements
                       else "–")
        statement_rows.append(row)
    for label, value in before_statements.items():
        if not any(r[0] == label for r in statement_rows):
            statement_rows.append([label, f"{value:.3f}", "0.000"])
    headers = ["statement", "per transfer"] if not before_statements else [
        "statement", "before: per transfer", "after"]
    lines += ["PostgreSQL statements per transfer at that step:", "",
              markdown_table(headers, statement_rows), ""]
    if server.transfer_money_ms is not None:
        lines += [f"`transfer_money` ran {server.transfer_money_ms:.3f} ms on average inside "
                  "PostgreSQL (pg_stat_statements), commit excluded.", ""]
    profiled = next((s for s in run.transfer_steps if s.server and s.server.waits), None)
    if profiled is not None and profiled.server is not None:
        lines += [f"Profiled step: {profiled.concurrency} concurrent. "
                  + _waits_line(profiled.server.waits), "", *_perf_lines(profiled.server)]
    return lines


def hot_account(run: BenchRun) -> list[str]:
    hot: Step | None = run.hot
    if hot is None:
        return []
    result, server = hot.result, hot.server
    hist = result.histogram()
    errors = ", ".join(f"{kind} {n:,}" for (_, kind), n in sorted(result.errors.items())) or "none"
    lines = [f"{hot.concurrency} concurrent clients, {run.hot_share:.0%} of the transfers touching "
             "one account (half from it, half to it), closed loop:", "",
             markdown_table(["transfers/s", "p50 ms", "p95 ms", "p99 ms", "errors", "5xx",
                             "deadlocks", "retries", "other processes' cores"],
                            [[fmt_rate(result.throughput), fmt_ms(hist.percentile_s(50)),
                              fmt_ms(hist.percentile_s(95)), fmt_ms(hist.percentile_s(99)),
                              errors, f"{server_errors(result):,}",
                              str(server.deadlocks) if server else "–",
                              f"{server.retries:,.0f}" if server else "–",
                              f"{server.other_cores:.2f}" if server else "–"]]), ""]
    if server is not None:
        lines.append(_bound(server, result.throughput, run.hot_share, run.transfer_alone))
        lines.append("")
        lines += _perf_lines(server)
    return lines


def _bound(server: ServerSide, rate: float, share: float, alone: TransferAlone | None) -> str:
    """What bounds the hot account, in words: its transfers are serial up to the end of each
    commit, so the commit's WAL flush, the work under the lock and the hand-off to the next
    holder (a CPU for it) make the turn; batching shares one turn between several transfers."""
    hot_rate = rate * share
    seconds = max(server.seconds, 1e-9)
    commits = server.transactions / seconds
    text = (f"The hot account takes {fmt_rate(hot_rate)} transfers/s. Its row lock is held from a "
            "transfer's `SELECT ... FOR UPDATE` to the end of its commit's WAL flush, so its "
            "transactions run one after the other; concurrent transfers share a transaction "
            "(adapters/transfer_batches.py), and PostgreSQL committed "
            f"{fmt_rate(commits)} transactions/s for {fmt_rate(rate)} transfers/s (every "
            "statement of the stack counted, the request gate's and the relay's too)")
    flush = server.wal_flush_ms
    if flush is not None and flush > 0:
        text += (f". A WAL flush took {flush:.2f} ms on average (pg_stat_wal, "
                 f"{server.wal_flushes / seconds:,.0f} a second)")
    if alone is not None:
        flushed = f" and {alone.flush_ms:.2f} ms flushing" if alone.flush_ms else ""
        text += (f"; alone on the idle server just before, one client spent "
                 f"{alone.exec_ms:.2f} ms inside transfer_money{flushed} "
                 f"({alone.client_ms:.2f} ms a round trip, {alone.calls} calls)")
    text += (". Each turn of the lock is that work, the flush, and the next holder being woken "
             "and getting a CPU, on a machine whose 2 cores the services, Envoy and Redis keep "
             "busy")
    if not math.isnan(server.machine_cores):
        text += (f" ({server.machine_cores:.2f} cores busy on average, "
                 f"{server.other_cores:.2f} of them other processes)")
    text += "."
    if server.transfer_money_ms is not None:
        text += (f" transfer_money ran {server.transfer_money_ms:.2f} ms on average, waiting "
                 "for the lock included.")
    waits = server.waits
    line = _waits_line(waits)
    if line and waits is not None:
        lock = sum(sh for sh, st in waits.shares if st.startswith("Lock"))
        wal = sum(sh for sh, st in waits.shares if "WAL" in st)
        cpu = sum(sh for sh, st in waits.shares if st.startswith("running"))
        text += (f" {line} Queued for the hot row: {fmt_pct(lock)}; WAL write and flush: "
                 f"{fmt_pct(wal)}; running: {fmt_pct(cpu)}.")
    return text
