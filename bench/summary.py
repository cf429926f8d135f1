"""A run's key figures as plain JSON (results/bench-*/summary.json), so that a later run can show
them beside its own (`--before`): CPU per transfer by process and statements per operation,
before and after a change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.analysis import (
    best_step,
    best_transfer_step,
    hit_rate,
    server_errors,
    statement_counts,
    statements_per_login,
)
from bench.cpu import by_role
from bench.model import BenchRun, Step
from bench.statements import READ_PATH


def _server(step: Step | None) -> dict[str, Any] | None:
    if step is None or step.server is None or not step.server.transfers:
        return None
    server = step.server
    per = server.transfers
    return {
        "concurrency": step.concurrency,
        "transfers_per_s": step.result.throughput,
        "p95_ms": step.result.histogram().percentile_s(95) * 1000,
        "cpu_ms_per_transfer": {role: used * 1000 / per
                                for role, used in sorted(by_role(server.cpu_s).items())},
        "statements_per_transfer": {f"{kind}: {what}": n / per
                                    for (kind, what), n in sorted(server.statements.calls.items())},
        "transfer_money_ms": server.transfer_money_ms,
        "deadlocks": server.deadlocks,
        "server_errors": server_errors(step.result),
    }


def summarize(run: BenchRun) -> dict[str, Any]:
    on, off = run.phase(True), run.phase(False)
    reads = best_step(run.read_steps, 99, run.read_p99_goal_s)
    out: dict[str, Any] = {
        "started_at": run.started_at,
        "quick": run.quick,
        "hit_rate": {"balance": hit_rate(on, "balance"), "recent": hit_rate(on, "recent")},
        "statements_per_login": statements_per_login(on) if on else None,
        "reads_per_s_max": reads.result.throughput if reads else None,
        "transfer_max": _server(best_transfer_step(run)),
        # Every step, by concurrency: CPU per transfer compares at the same load.
        "transfer_steps": {str(step.concurrency): _server(step) for step in run.transfer_steps},
        "hot_account": _server(run.hot),
        "pgbench_tps": run.baselines.pgbench_tps,
    }
    for label, phase in (("cache_off", off), ("cache_on", on)):
        if phase is None:
            continue
        counts = statement_counts(phase)
        out[label] = {"read_path_per_s": counts.total("read", READ_PATH) / phase.window_s,
                      "reads_per_s": counts.reads / phase.window_s,
                      "data_statements_per_s": counts.data / phase.window_s}
    return out


def write_summary(run: BenchRun, path: Path) -> None:
    path.write_text(json.dumps(summarize(run), indent=2, sort_keys=True))


def load_summary(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
