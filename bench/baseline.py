"""The raw servers in the same run: pgbench tpcb-like on the same PostgreSQL (its own database),
redis-benchmark GET on the same Redis Cluster. Every figure of the services then also reads as a
ratio to what the servers alone do on this machine."""

from __future__ import annotations

import csv
import io
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.redis_acl import RedisUser

PGBENCH_DB = "bench_pgbench"
_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    latency_avg_ms: float
    clients: int
    seconds: int
    scale: int


@dataclass(frozen=True)
class RedisBenchmarkResult:
    test: str
    rps: float
    p50_ms: float
    p99_ms: float
    clients: int
    requests: int


def parse_pgbench(output: str) -> tuple[float, float]:
    """(TPS without connection time, average latency in ms) from pgbench's summary."""
    tps = _TPS.search(output)
    latency = _LATENCY.search(output)
    if tps is None:
        raise ValueError("no 'tps = ...' line in pgbench's output")
    return float(tps.group(1)), float(latency.group(1)) if latency else float("nan")


def parse_redis_benchmark_csv(output: str) -> dict[str, tuple[float, float, float]]:
    """{test: (rps, p50 ms, p99 ms)} from `redis-benchmark --csv`."""
    # In cluster mode the CSV follows a few lines that describe the masters.
    rows = [row for row in csv.reader(io.StringIO(output.strip())) if row]
    starts = [i for i, row in enumerate(rows) if row[0].strip().lower() == "test"]
    if not starts:
        return {}
    header = [h.strip().lower() for h in rows[starts[0]]]
    out: dict[str, tuple[float, float, float]] = {}
    for row in rows[starts[0] + 1:]:
        if len(row) != len(header):
            continue
        record = dict(zip(header, row, strict=True))
        try:
            out[record["test"]] = (float(record["rps"]), float(record.get("p50_latency_ms", "nan")),
                                   float(record.get("p99_latency_ms", "nan")))
        except (KeyError, ValueError):
            continue
    return out


def _os_user() -> str | None:
    """PostgreSQL's tools are run as `postgres` when we are root, as the server itself is."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


def _run(argv: list[str], timeout_s: float, user: str | None = None,
         password: str | None = None) -> str:
    """`password`: redis-cli's and redis-benchmark's, through the environment (REDISCLI_AUTH),
    never on the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, check=False,
        stdin=subprocess.DEVNULL, cwd="/tmp", user=user, group=user,
        extra_groups=[] if user is not None else None, env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout)[-800:]}")
    return result.stdout + result.stderr


def run_pgbench(bindir: Path, admin_dsn: str, host: str, port: int, *, scale: int, clients: int,
                seconds: int) -> PgbenchResult:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(PGBENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PGBENCH_DB)))
    pgbench = str(bindir / "pgbench")
    common = ["-h", host, "-p", str(port), "-U", "postgres"]
    user = _os_user()
    try:
        _run([pgbench, "-i", "-q", "-s", str(scale), *common, PGBENCH_DB], 300, user)
        output = _run([pgbench, "-b", "tpcb-like", "-c", str(clients), "-j", "2",
                       "-T", str(seconds), "-n", *common, PGBENCH_DB], seconds + 120, user)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(PGBENCH_DB)))
    tps, latency = parse_pgbench(output)
    return PgbenchResult(tps, latency, clients, seconds, scale)


def run_redis_benchmark(host: str, port: int, *, clients: int, requests: int,
                        user: RedisUser | None = None) -> RedisBenchmarkResult:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found (Debian package redis-tools)")
    # --cluster spreads the keys over every master, as the services' keys are; no pipelining,
    # since a service makes one call per request too.
    auth = ["--user", user.name] if user is not None else []
    output = _run([binary, "-h", host, "-p", str(port), "--cluster", "-c", str(clients),
                   "-n", str(requests), "-t", "get", "-P", "1", "--csv", *auth], 300,
                  password=user.password if user is not None else None)
    results = parse_redis_benchmark_csv(output)
    if "GET" not in results:
        raise RuntimeError(f"no GET line in redis-benchmark's output: {output[-400:]}")
    rps, p50, p99 = results["GET"]
    return RedisBenchmarkResult("GET", rps, p50, p99, clients, requests)


@dataclass(frozen=True)
class TransferAlone:
    """One client calling transfer_money back to back on an otherwise idle server: what a
    transfer costs PostgreSQL with no queue, no CPU contention and no Python in front of it."""

    calls: int
    client_ms: float  # one round trip, as the client saw it
    exec_ms: float  # inside transfer_money (pg_stat_statements)
    flush_ms: float | None  # one WAL flush (pg_stat_wal; None without track_wal_io_timing)


_TRANSFER_ALONE_SQL = (
    "SELECT outcome FROM transfer_money(%(user)s, %(key)s, %(from_id)s, %(to_id)s, 1, 'EUR',"
    " 'bench: alone', %(from_p)s, %(to_p)s)"
)


def transfer_money_alone(dsn: str, user_id: str, from_account: str, to_account: str,
                         partitions: tuple[int, int], calls: int = 400) -> TransferAlone:
    """`calls` transfers of 1 cent from the user's account to another, one at a time."""
    import time
    import uuid

    with psycopg.connect(dsn, autocommit=True) as conn:
        def sampled() -> tuple[float, int, float, int]:
            stmt = conn.execute("SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0)"
                                " FROM pg_stat_statements WHERE query LIKE %s",
                                ("SELECT outcome FROM transfer_money(%",)).fetchone() or (0.0, 0)
            wal = conn.execute("SELECT wal_sync, wal_sync_time FROM pg_stat_wal").fetchone() \
                or (0, 0.0)
            return float(stmt[0]), int(stmt[1]), float(wal[1] or 0.0), int(wal[0] or 0)

        before = sampled()
        started = time.perf_counter()
        for _ in range(calls):
            conn.execute(_TRANSFER_ALONE_SQL, {
                "user": user_id, "key": f"alone-{uuid.uuid4().hex}", "from_id": from_account,
                "to_id": to_account, "from_p": partitions[0], "to_p": partitions[1]})
        elapsed = time.perf_counter() - started
        # A backend reports its WAL statistics when it goes idle, at most once a second.
        conn.execute("SELECT pg_stat_force_next_flush()")
        after = sampled()
    exec_calls = after[1] - before[1]
    syncs = after[3] - before[3]
    return TransferAlone(
        calls, elapsed * 1000 / calls,
        (after[0] - before[0]) / exec_calls if exec_calls else float("nan"),
        (after[2] - before[2]) / syncs if syncs and after[2] > before[2] else None)
