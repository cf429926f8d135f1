"""What the servers say about a phase: the services' /metrics, Redis INFO and PostgreSQL's
statistics, as snapshots taken before and after, whose differences the report shows."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families

from devstack.redis_acl import RedisUser

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, str, Labels]  # endpoint, sample name, labels

# Statements that move no data: transaction control and session settings.
# (PostgreSQL's regex word boundary is \y, not \b: match the word and what may follow it.)
_CONTROL = (r"^\s*(begin|commit|end|rollback|start transaction|set|show|reset|discard|deallocate)"
            r"(\s|;|$)")
_STATEMENTS_SQL = (
    "SELECT coalesce(sum(calls), 0)::bigint,"
    f" coalesce(sum(calls) FILTER (WHERE query !~* '{_CONTROL}'), 0)::bigint"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)"
)
# The whole text (not cut): the bench sorts statements by what they read or write
# (bench/statements.py), which can be said far into a statement.
_PER_STATEMENT_SQL = (
    "SELECT queryid, calls, rows, regexp_replace(query, '\\s+', ' ', 'g'), total_exec_time"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)"
)
# The WAL flushes (commits) of the whole server: with track_wal_io_timing, their time.
_WAL_SQL = "SELECT wal_sync, wal_sync_time FROM pg_stat_wal"
_DATABASE_SQL = (
    "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched,"
    " tup_inserted + tup_updated + tup_deleted, deadlocks"
    " FROM pg_stat_database WHERE datname = %s"
)


def scrape(url: str, timeout_s: float = 2.0) -> dict[tuple[str, Labels], float]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return parse_exposition(text)


def parse_exposition(text: str) -> dict[tuple[str, Labels], float]:
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


@dataclass
class MetricsSnapshot:
    """Every sample of every service endpoint that answered."""

    samples: dict[SampleKey, float] = field(default_factory=dict)
    answered: list[str] = field(default_factory=list)

    @classmethod
    def take(cls, endpoints: Iterable[str]) -> MetricsSnapshot:
        snap = cls()
        for endpoint in endpoints:
            try:
                scraped = scrape(f"http://{endpoint}/metrics")
            except OSError:
                continue  # a service that is not built (or not up) has no metrics to give
            snap.answered.append(endpoint)
            for (name, labels), value in scraped.items():
                snap.samples[(endpoint, name, labels)] = value
        return snap

    def delta(self, earlier: MetricsSnapshot) -> dict[SampleKey, float]:
        return {k: v - earlier.samples.get(k, 0.0) for k, v in self.samples.items()}


def sum_by(delta: dict[SampleKey, float], sample_name: str,
           *labels: str) -> dict[tuple[str, ...], float]:
    """Sum a counter's increase over every endpoint, grouped by the given labels."""
    out: dict[tuple[str, ...], float] = {}
    for (_endpoint, name, label_pairs), value in delta.items():
        if name != sample_name:
            continue
        lookup = dict(label_pairs)
        group = tuple(lookup.get(label, "") for label in labels)
        out[group] = out.get(group, 0.0) + value
    return out


@dataclass(frozen=True)
class RedisSnapshot:
    keyspace_hits: int
    keyspace_misses: int
    commands: int
    used_memory_masters: int
    used_memory_all: int
    keys: int
    nodes: int

    @classmethod
    def take(cls, ports: Iterable[int], user: RedisUser | None = None,
             host: str = "127.0.0.1") -> RedisSnapshot:
        hits = misses = commands = mem_masters = mem_all = keys = nodes = 0
        for port in ports:
            client = redis.Redis(host=host, port=port, socket_timeout=2.0,
                                 username=user.name if user else None,
                                 password=user.password if user else None)
            try:
                stats = client.info("stats")
                memory = client.info("memory")
                role = client.info("replication").get("role")
                size = int(client.dbsize())
            except redis.RedisError:
                continue
            finally:
                client.close()
            nodes += 1
            hits += int(stats.get("keyspace_hits", 0))
            misses += int(stats.get("keyspace_misses", 0))
            commands += int(stats.get("total_commands_processed", 0))
            mem_all += int(memory.get("used_memory", 0))
            if role == "master":
                mem_masters += int(memory.get("used_memory", 0))
                keys += size
        return cls(hits, misses, commands, mem_masters, mem_all, keys, nodes)


@dataclass(frozen=True)
class DatabaseSnapshot:
    statements: int  # every statement pg_stat_statements saw, BEGIN/COMMIT included
    data_statements: int  # SELECT/INSERT/UPDATE/DELETE/CALL...: the round trips that do work
    transactions: int
    rows_returned: int
    rows_fetched: int
    rows_written: int
    at: float
    # queryid -> (calls, rows, query text); only when asked for (the per-second sampler skips it)
    per_statement: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    deadlocks: int = 0
    exec_ms: dict[int, float] = field(default_factory=dict)  # queryid -> total execution time
    wal_syncs: int = 0
    wal_sync_ms: float = 0.0

    @classmethod
    def take(cls, conn: psycopg.Connection[tuple[Any, ...]], dbname: str,
             per_statement: bool = False) -> DatabaseSnapshot:
        statements, data = conn.execute(_STATEMENTS_SQL, (dbname,)).fetchone() or (0, 0)
        row = conn.execute(_DATABASE_SQL, (dbname,)).fetchone() or (0, 0, 0, 0, 0)
        detail: dict[int, tuple[int, int, str]] = {}
        exec_ms: dict[int, float] = {}
        if per_statement:
            for qid, calls, rows, query, total_ms in conn.execute(_PER_STATEMENT_SQL,
                                                                  (dbname,)):
                detail[int(qid)] = (int(calls), int(rows), str(query))
                exec_ms[int(qid)] = float(total_ms)
        wal = conn.execute(_WAL_SQL).fetchone() or (0, 0.0)
        return cls(int(statements), int(data), int(row[0]), int(row[1]),
                   int(row[2]), int(row[3]), time.time(), detail, int(row[4] or 0), exec_ms,
                   int(wal[0] or 0), float(wal[1] or 0.0))

    def mean_wal_sync_ms(self, earlier: DatabaseSnapshot) -> float | None:
        """How long a WAL flush took on average between two snapshots (0 without timing)."""
        syncs = self.wal_syncs - earlier.wal_syncs
        return (self.wal_sync_ms - earlier.wal_sync_ms) / syncs if syncs > 0 else None

    def statement_deltas(self, earlier: DatabaseSnapshot) -> list[tuple[int, str]]:
        """(calls, query) of every statement called between two per-statement snapshots."""
        out = []
        for qid, (calls, _, query) in self.per_statement.items():
            before = earlier.per_statement.get(qid, (0, 0, ""))[0]
            if calls > before:
                out.append((calls - before, query))
        return out

    def mean_exec_ms(self, earlier: DatabaseSnapshot, fragment: str) -> float | None:
        """Mean execution time of the statements whose text holds `fragment`, in the window."""
        calls = total = 0.0
        for qid, (n, _, query) in self.per_statement.items():
            if fragment in query.lower():
                calls += n - earlier.per_statement.get(qid, (0, 0, ""))[0]
                total += self.exec_ms.get(qid, 0.0) - earlier.exec_ms.get(qid, 0.0)
        return total / calls if calls > 0 else None

    def busiest_since(self, earlier: DatabaseSnapshot,
                      limit: int = 8) -> list[tuple[int, int, str]]:
        """(calls, rows, query) of the statements called most often between two snapshots."""
        out = []
        for qid, (calls, rows, query) in self.per_statement.items():
            before_calls, before_rows, _ = earlier.per_statement.get(qid, (0, 0, ""))
            if calls > before_calls:
                out.append((calls - before_calls, rows - before_rows, query))
        return sorted(out, reverse=True)[:limit]


def open_monitor_connection(admin_dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to the `postgres` database: the bench's own queries then never count in the
    application database's statistics."""
    conn = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return conn


class DatabaseSampler:
    """Samples statement counts once a second in a thread (database QPS over time)."""

    def __init__(self, admin_dsn: str, dbname: str, interval_s: float = 1.0) -> None:
        self._dsn = admin_dsn
        self._dbname = dbname
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[DatabaseSnapshot] = []

    def __enter__(self) -> DatabaseSampler:
        self._stop.clear()
        self.samples = []
        self._thread = threading.Thread(target=self._run, name="db-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error), open_monitor_connection(self._dsn) as conn:
            while not self._stop.is_set():
                self.samples.append(DatabaseSnapshot.take(conn, self._dbname))
                self._stop.wait(self._interval)

    def rate_series(self, since_wall: float) -> list[tuple[float, float]]:
        """(seconds since `since_wall`, data statements per second) between samples."""
        out: list[tuple[float, float]] = []
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            if b.at > a.at:
                out.append(((a.at + b.at) / 2 - since_wall,
                            (b.data_statements - a.data_statements) / (b.at - a.at)))
        return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_proc_stat_busy(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line (idle + iowait are idle)."""
    fields = text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the cpu line")
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(parent pid, user + system jiffies) from /proc/<pid>/stat."""
    fields = text.rsplit(")", 1)[-1].split()
    # after "pid (comm)": state ppid ... utime is field 14, stime 15 (1-based in proc(5))
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _descendants_jiffies(root: int) -> int:
    """CPU of `root` and every live process below it: the bench, its load generator workers and
    the stack it started (services, PostgreSQL and its backends, Redis)."""
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid, jiffies = parse_pid_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        parents[int(entry)], cpu[int(entry)] = ppid, jiffies
    total = 0
    for pid in cpu:
        walker, seen = pid, 0
        while walker and walker != root and seen < 64:
            walker, seen = parents.get(walker, 0), seen + 1
        if walker == root:
            total += cpu[pid]
    return total


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU and the share of it this run's own process tree used."""

    machine_busy_s: float
    ours_s: float
    at: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                busy, _total = parse_proc_stat_busy(f.read())
            ours = _descendants_jiffies(os.getpid())
        except (OSError, ValueError):
            return cls(math.nan, math.nan, time.time())
        return cls(busy / CLOCK_TICKS, ours / CLOCK_TICKS, time.time())

    def cores_since(self, earlier: CpuSnapshot) -> tuple[float, float]:
        """(cores busy on the machine, cores used by this run) on average between two snapshots.
        Processes that ended in between are not counted in the second figure."""
        elapsed = max(self.at - earlier.at, 1e-9)
        return ((self.machine_busy_s - earlier.machine_busy_s) / elapsed,
                max(0.0, self.ours_s - earlier.ours_s) / elapsed)
