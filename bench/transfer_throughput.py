"""Transfer throughput end to end: gRPC client -> transfer service -> PostgreSQL (+ events on the
Redis Cluster), and pgbench's tpcb-like TPS on the same PostgreSQL as the yardstick.

    .venv/bin/python -m bench.transfer_throughput [--seconds 10] [--concurrency 64] [--replicas 1]

Starts its own durable PostgreSQL (fsync and synchronous_commit on: honest numbers) and Redis
Cluster in a temporary folder, the transfer service as separate processes (`python -m
services.transfer`, like production), seeds users and money through devstack.seed, then runs
`--concurrency` concurrent CreateTransfer calls for `--seconds` and prints transfers/s, p50, p99
and the ratio to pgbench (`pgbench -c 16 -j 2 -T 10` on a separate database, tpcb-like).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
from bank.v1 import common_pb2, transfer_pb2, transfer_pb2_grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from devstack import seed  # noqa: E402
from devstack.ports import free_ports  # noqa: E402
from devstack.postgres import LocalPostgres  # noqa: E402
from devstack.processes import ManagedProcess, child_pids  # noqa: E402
from devstack.redis_cluster import LocalRedisCluster  # noqa: E402
from services.auth.adapters.session_store import SessionStore  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.db import create_engine  # noqa: E402
from shared.migrate import upgrade_to_head  # noqa: E402
from shared.pg_pool import create_pool  # noqa: E402
from shared.sessions import SessionEntrySigner  # noqa: E402

USERS = 64
BENCH_SIGNING_KEY = "bench-only-session-signing-key-0123456789abcdef"
ACCOUNTS_PER_USER = 2
START_BALANCE = 1_000_000_000


async def seed_accounts(settings: Settings) -> list[tuple[str, list[str]]]:
    """(token, account ids) per user; every account holds plenty of money."""
    engine = create_engine(settings)
    pool = create_pool(settings, size=1)
    await pool.open()
    users: list[tuple[str, list[str]]] = []
    try:
        await seed.ensure_settlement_account(engine)
        # PostgreSQL only: the services confirm each session on first use and cache it.
        sessions = SessionStore(pool, None, SessionEntrySigner(BENCH_SIGNING_KEY), ttl_s=3600,
                                absolute_ttl_s=43_200)
        for _ in range(USERS):
            user = await seed.create_user(engine, f"bench-{uuid.uuid4().hex}@example.com", "-",
                                          "Bench", password_hash="!")
            accounts = [await seed.create_account(engine, user) for _ in range(ACCOUNTS_PER_USER)]
            for account in accounts:
                await seed.deposit(engine, account, START_BALANCE)
            token = (await sessions.create(user)).token
            users.append((token, accounts))
    finally:
        await pool.close()
        await engine.dispose()
    return users


def start_services(settings: Settings, replicas: int, folder: Path,
                   redis_env: dict[str, str]) -> tuple[list[ManagedProcess], list[int]]:
    """`redis_env`: the transfer service's Redis user."""
    ports = free_ports(replicas)
    procs: list[ManagedProcess] = []
    for i, port in enumerate(ports):
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
               "BANK_DATABASE_URL": settings.database_url, "BANK_REDIS_NODES": settings.redis_nodes,
               "BANK_GRPC_PORT": str(port), "BANK_LOG_LEVEL": "WARNING",
               "BANK_SESSION_SIGNING_KEY": BENCH_SIGNING_KEY, **redis_env}
        proc = ManagedProcess([sys.executable, "-m", "services.transfer"],
                              log_path=folder / f"transfer-{i}.log", name=f"transfer-{i}",
                              cwd=ROOT, env=env)
        proc.start()
        procs.append(proc)
    return procs, ports


async def wait_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transfer service on {port} did not become SERVING")
            await asyncio.sleep(0.2)


def cpu_seconds(pids: list[int], include_reaped_children: bool = False) -> float:
    """User + system CPU of these processes (Linux /proc), optionally with their exited
    children's (PostgreSQL backends that ended)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        if include_reaped_children:
            total += int(fields[13]) + int(fields[14])
    return total / tick


def cpu_by_component(pg: LocalPostgres, cluster: LocalRedisCluster,
                     services: list[ManagedProcess]) -> dict[str, float]:
    postmaster = pg.pid or 0
    return {
        "transfer service": cpu_seconds([p.pid for p in services if p.pid]),
        "postgresql": cpu_seconds([postmaster], True) + cpu_seconds(child_pids(postmaster)),
        "redis cluster": cpu_seconds([p for p in cluster.pids.values() if p]),
        "bench client": cpu_seconds([os.getpid()]),
    }


async def drive(ports: list[int], users: list[tuple[str, list[str]]], concurrency: int,
                seconds: float, warmup: float) -> tuple[int, list[float], int, int]:
    """Returns (transfers completed in the window, their latencies, errors, all completed)."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    options = [("grpc.lb_policy_name", "round_robin")]
    all_accounts = [a for _, accounts in users for a in accounts]
    latencies: list[float] = []
    errors = 0
    completed = 0
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        start = time.perf_counter()
        window_start, window_end = start + warmup, start + warmup + seconds

        async def worker(n: int) -> None:
            nonlocal errors, completed
            token, accounts = users[n % len(users)]
            metadata = (("authorization", f"Bearer {token}"),)
            rng = random.Random(n)
            while True:
                source = rng.choice(accounts)
                destination = rng.choice(all_accounts)
                if destination == source:
                    continue
                request = transfer_pb2.CreateTransferRequest(
                    from_account_id=source, to_account_id=destination,
                    amount=common_pb2.Money(minor_units=rng.randint(1, 1000), currency="EUR"),
                    idempotency_key=uuid.uuid4().hex, description="bench",
                )
                began = time.perf_counter()
                if began >= window_end:
                    return
                try:
                    await stub.CreateTransfer(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                done = time.perf_counter()
                completed += 1
                if began >= window_start and done <= window_end:
                    latencies.append(done - began)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return len(latencies), latencies, errors, completed


def top_statements(pg: LocalPostgres, limit: int = 4) -> list[str]:
    """Where PostgreSQL spent its time during the run (pg_stat_statements, reset before it)."""
    import psycopg

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, total_exec_time / calls * 1000, left(regexp_replace(query, '\\s+', ' ',"
            " 'g'), 70) FROM pg_stat_statements WHERE calls > 100"
            " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY total_exec_time DESC LIMIT %s", (limit,),
        ).fetchall()
    return [f"  {calls:7d} x {mean:6.0f} us  {query}" for calls, mean, query in rows]


def reset_statements(pg: LocalPostgres) -> None:
    import psycopg

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _pgbench_command(pg: LocalPostgres, tool: str) -> list[str]:
    """pgbench and createdb refuse to run as root: run them as the postgres user then."""
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    binary = pg.bindir / tool
    return [*user, str(binary) if binary.exists() else tool,
            "-h", pg.host, "-p", str(pg.port), "-U", pg.user]


def prepare_pgbench(pg: LocalPostgres) -> None:
    """A database of its own, scale 10 (10 branches: the same contention as the usual runs)."""
    subprocess.run([*_pgbench_command(pg, "createdb"), "pgbench"], check=True,
                   capture_output=True)
    subprocess.run([*_pgbench_command(pg, "pgbench"), "-i", "-s", "10", "-q", "pgbench"],
                   check=True, capture_output=True)


def pgbench_tps(pg: LocalPostgres, seconds: int) -> float:
    """tpcb-like TPS with 16 clients and 2 threads."""
    out = subprocess.run(
        [*_pgbench_command(pg, "pgbench"), "-c", "16", "-j", "2", "-T", str(seconds), "pgbench"],
        check=True, capture_output=True, text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no tps in pgbench output:\n{out}")
    return float(match.group(1))


@dataclass
class Totals:
    transfers: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    completed: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    rounds: list[tuple[float, float]] = field(default_factory=list)


async def measure(args: argparse.Namespace, folder: Path) -> tuple[Totals, list[str]]:
    pg = LocalPostgres(folder / "pg", durable=True)
    cluster = LocalRedisCluster(folder / "redis")
    procs: list[ManagedProcess] = []
    totals = Totals()
    try:
        pg.start()
        cluster.start()
        upgrade_to_head(pg.owner_dsn)
        settings = Settings(database_url=pg.owner_dsn, redis_nodes=cluster.startup_nodes_csv,
                            redis_username=cluster.admin.name,
                            redis_password=cluster.admin.password)
        users = await seed_accounts(settings)
        await asyncio.to_thread(prepare_pgbench, pg)
        # The services as they run everywhere: the transfer login, money through the functions.
        procs, ports = start_services(
            dataclasses.replace(settings, database_url=pg.service_dsn("transfer")),
            args.replicas, folder, cluster.users["transfer"].env())
        for port in ports:
            await wait_serving(port)
        reset_statements(pg)
        # Rounds alternate the two loads, so that a change in what else runs on the machine
        # hits both sides of the ratio alike. The services idle during pgbench.
        for _ in range(args.rounds):
            before = cpu_by_component(pg, cluster, procs)
            count, latencies, errors, completed = await drive(
                ports, users, args.concurrency, args.seconds, args.warmup)
            after = cpu_by_component(pg, cluster, procs)
            for name in after:
                totals.cpu[name] = totals.cpu.get(name, 0.0) + after[name] - before[name]
            totals.transfers += count
            totals.seconds += args.seconds
            totals.latencies += latencies
            totals.errors += errors
            totals.completed += completed
            tps = await asyncio.to_thread(pgbench_tps, pg, args.pgbench_seconds)
            totals.rounds.append((count / args.seconds, tps))
        statements = top_statements(pg)
    finally:
        for proc in procs:
            proc.stop()
        cluster.stop()
        pg.stop()
    return totals, statements


def report(args: argparse.Namespace, totals: Totals, statements: list[str]) -> None:
    rate = totals.transfers / totals.seconds
    tps = sum(t for _, t in totals.rounds) / len(totals.rounds)
    print(f"transfers at {args.concurrency} concurrent over gRPC, {args.replicas} replica(s), "
          f"durable PostgreSQL; {args.rounds} rounds of {args.seconds:.0f} s")
    print(f"  transfers/s      {rate:8.0f}")
    latencies = totals.latencies
    if latencies:
        print(f"  p50              {percentile(latencies, 0.50) * 1000:8.2f} ms")
        print(f"  p99              {percentile(latencies, 0.99) * 1000:8.2f} ms")
    print(f"  errors           {totals.errors:8d}")
    print("CPU per transfer (2 cores, shared with whatever else runs on the machine):")
    for name, seconds in totals.cpu.items():
        print(f"  {name:16s} {seconds / max(totals.completed, 1) * 1e6:8.0f} us")
    print("PostgreSQL statements by total time (calls x mean execution time):")
    print("\n".join(statements))
    print(f"pgbench tpcb-like  {tps:8.0f} tps (-c 16 -j 2 -T {args.pgbench_seconds}, same server)")
    for n, (round_rate, round_tps) in enumerate(totals.rounds, 1):
        print(f"  round {n}: {round_rate:6.0f} transfers/s, {round_tps:6.0f} tps, "
              f"ratio {round_rate / round_tps:.2f}")
    print(f"ratio              {rate / tps:8.2f} transfers per pgbench transaction")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        totals, statements = await measure(args, Path(tmp))
    report(args, totals, statements)


if __name__ == "__main__":
    asyncio.run(main())
