"""What the servers did during a closed-loop step: CPU by process, PostgreSQL's statements by
kind, deadlocks and retries, transfer_money's time inside PostgreSQL, and (at the profiled step)
PostgreSQL's wait events and a perf profile of its backends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.cpu import CpuByProcess
from bench.model import ServerSide
from bench.observe import (
    CpuSnapshot,
    DatabaseSnapshot,
    MetricsSnapshot,
    open_monitor_connection,
    sum_by,
)
from bench.pgprofile import PerfRecorder, WaitSampler, postgres_pids
from bench.stack import DBNAME, Endpoints, metrics_endpoints
from bench.statements import StatementCounts


class ObservedStack(Protocol):
    def process_groups(self) -> Mapping[str, Sequence[int]]: ...


@dataclass
class Observation:
    server: ServerSide | None = field(default=None)


class ServerObserver:
    def __init__(self, stack: ObservedStack, endpoints: Endpoints, profile_dir: Path) -> None:
        self._stack = stack
        self._endpoints = endpoints
        self._profile_dir = profile_dir

    @contextlib.contextmanager
    def observe(self, *, profile: bool, seconds: float) -> Iterator[Observation]:
        observation = Observation()
        groups = self._stack.process_groups()
        with open_monitor_connection(self._endpoints.admin_dsn) as monitor, \
                contextlib.ExitStack() as profiling:
            waits = perf = None
            if profile:
                waits = profiling.enter_context(WaitSampler(self._endpoints.admin_dsn, DBNAME))
                postmaster = groups.get("postgres", ())
                if postmaster:
                    perf = PerfRecorder(self._profile_dir / "postgres")
                    perf.start(postgres_pids(postmaster[0]), seconds)
            db_before = DatabaseSnapshot.take(monitor, DBNAME, per_statement=True)
            metrics_before = MetricsSnapshot.take(metrics_endpoints())
            cpu_before = CpuByProcess.take(groups)
            machine_before = CpuSnapshot.take()
            started = time.monotonic()
            yield observation
            elapsed = time.monotonic() - started
            cpu = CpuByProcess.take(groups).since(cpu_before)
            busy, ours = CpuSnapshot.take().cores_since(machine_before)
            # PostgreSQL publishes a backend's counters when it goes idle (at most once a second).
            time.sleep(1.1)
            db_after = DatabaseSnapshot.take(monitor, DBNAME, per_statement=True)
            metrics = MetricsSnapshot.take(metrics_endpoints()).delta(metrics_before)
        calls = sum_by(metrics, "bank_grpc_requests_total", "method", "code")
        retries = sum_by(metrics, "bank_db_queries_total", "service", "query")
        observation.server = ServerSide(
            seconds=elapsed,
            transfers=calls.get(("CreateTransfer", "OK"), 0.0),
            cpu_s=cpu,
            statements=StatementCounts.of(db_after.statement_deltas(db_before)),
            deadlocks=db_after.deadlocks - db_before.deadlocks,
            retries=retries.get(("transfer", "retry"), 0.0),
            transfer_money_ms=db_after.mean_exec_ms(db_before, "transfer_money("),
            wal_flush_ms=db_after.mean_wal_sync_ms(db_before),
            wal_flushes=db_after.wal_syncs - db_before.wal_syncs,
            transactions=db_after.transactions - db_before.transactions,
            waits=waits.result() if waits is not None else None,
            perf=perf.finish() if perf is not None else None,
            machine_cores=busy,
            other_cores=max(0.0, busy - ours),
        )
