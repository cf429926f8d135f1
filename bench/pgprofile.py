"""Where PostgreSQL's time goes during a phase, two ways:
- wait events: pg_stat_activity sampled every 20 ms; an active backend either runs (CPU) or waits
  on something (Lock: a row or transaction another transfer holds; LWLock/IO WAL: the commit's
  flush), so the shares say what bounds a hot account;
- perf: on-CPU samples of the backends and the WAL writer (`perf record`, when perf is there
  and allowed), summed by function (the postgres binary exports its function names).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

_WAITS_SQL = (
    "SELECT coalesce(wait_event_type || ': ' || wait_event, 'running (CPU)')"
    " FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
    " AND pid <> pg_backend_pid()"
)
_PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$")


@dataclass(frozen=True)
class WaitShares:
    samples: int  # active backends seen over all ticks
    ticks: int
    shares: list[tuple[float, str]]  # (share of samples, state), largest first

    @property
    def busy_backends(self) -> float:
        """Active backends on average: the database's concurrency during the phase."""
        return self.samples / self.ticks if self.ticks else 0.0


class WaitSampler:
    """Counts what active backends of one database are doing, in a thread."""

    def __init__(self, admin_dsn: str, dbname: str, interval_s: float = 0.02) -> None:
        self._dsn = admin_dsn
        self._dbname = dbname
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()
        self._ticks = 0

    def __enter__(self) -> WaitSampler:
        self._thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error), \
                psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
            while not self._stop.is_set():
                for (state,) in conn.execute(_WAITS_SQL, (self._dbname,)).fetchall():
                    self._counts[str(state)] += 1
                self._ticks += 1
                self._stop.wait(self._interval)

    def result(self) -> WaitShares:
        total = sum(self._counts.values())
        shares = [(n / total, state) for state, n in self._counts.most_common()] if total else []
        return WaitShares(total, self._ticks, shares)


@dataclass(frozen=True)
class PerfSummary:
    samples_note: str
    top: list[tuple[float, str]]  # (share of samples, "function (process)")


def perf_available() -> bool:
    return shutil.which("perf") is not None


def postgres_pids(postmaster: int) -> list[int]:
    """The postmaster's children now: backends, the WAL writer, the checkpointer, ..."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            if int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return children


class PerfRecorder:
    """`perf record` of a set of pids for a fixed time, in the background."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = folder / "postgres.perf.data"

    def start(self, pids: list[int], seconds: float) -> None:
        if not pids or not perf_available():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["perf", "record", "-F", "499", "-o", str(self._out), "-p",
             ",".join(str(p) for p in pids), "--", "sleep", str(max(1, int(seconds)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def finish(self, top: int = 12) -> PerfSummary | None:
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        if not self._out.exists():
            return None
        report = subprocess.run(
            ["perf", "report", "-i", str(self._out), "--stdio", "--no-children",
             "--sort", "comm,dso,sym", "--percent-limit", "0.5"],
            capture_output=True, text=True, timeout=120, check=False)
        return summarize_perf_report(report.stdout, top)


def summarize_perf_report(text: str, top: int = 12) -> PerfSummary:
    """perf report --stdio --sort comm,dso,sym: the largest lines, as (share, function)."""
    rows: list[tuple[float, str]] = []
    note = ""
    for line in text.splitlines():
        if line.startswith("# Samples:") or line.startswith("# Event count"):
            note = note or line.lstrip("# ").strip()
        match = _PERF_LINE.match(line)
        if match:
            share, comm, dso, sym = match.groups()
            where = comm if dso in (comm, "postgres") else f"{comm}, {Path(dso).name}"
            rows.append((float(share) / 100, f"{sym} ({where})"))
    rows.sort(reverse=True)
    return PerfSummary(note, rows[:top])


def as_dict(value: Any) -> Any:
    """Dataclasses to plain data for summary.json."""
    if isinstance(value, WaitShares):
        return {"samples": value.samples, "ticks": value.ticks, "shares": value.shares}
    if isinstance(value, PerfSummary):
        return {"note": value.samples_note, "top": value.top}
    return value
