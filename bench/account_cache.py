"""GetBalance over gRPC against one account-service process, cache on versus cache off.

    .venv/bin/python bench/account_cache.py [--seconds 8] [--concurrency 64] [--clients 1]
                                            [--caller edge|internal]

Starts its own PostgreSQL and Redis Cluster (devstack) in a temporary folder, seeds accounts and
Redis-backed sessions, then for each mode (cache_enabled=true, then false) starts one
`python -m services.account` process and measures, from separate client process(es):
- latency: sequential calls (one in flight), p50/p99 of the whole RPC including the session
  check; with the cache on, every call after the warm-up is a hit;
- throughput: a closed loop of `--concurrency` calls in flight for `--seconds`, and the service
  process's CPU use (from /proc) while it ran.
Every call carries the session token, which the service's request gate checks in Redis with the
per-user limit and the read-your-writes floor in one Lua call. `--caller edge` (the default) also
sends `x-bank-edge: 1`, as Envoy does for external requests, so the limit counts every call (its
threshold is raised out of reach); `--caller internal` is an internal caller (not counted).
Everything it starts is stopped by pid at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script: import the repository (and its generated code), not this folder's modules.
sys.path[:1] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
from bank.v1 import account_pb2, account_pb2_grpc  # noqa: E402

from devstack import seed  # noqa: E402
from devstack.ports import free_ports  # noqa: E402
from devstack.postgres import LocalPostgres  # noqa: E402
from devstack.processes import ManagedProcess, wait_for_port  # noqa: E402
from devstack.redis_cluster import LocalRedisCluster  # noqa: E402
from services.auth.adapters.session_store import SessionStore  # noqa: E402
from shared.call_metadata import EDGE_HEADER  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.db import create_engine  # noqa: E402
from shared.migrate import upgrade_to_head  # noqa: E402
from shared.pg_pool import create_pool  # noqa: E402
from shared.redis_client import create_redis_pipeline  # noqa: E402
from shared.sessions import SessionEntrySigner  # noqa: E402

Credential = tuple[str, str]  # (account id, bearer token)
# Only for the benchmark's own processes (the service it starts and its clients).
BENCH_SIGNING_KEY = "bench-only-session-signing-key-0123456789abcdef"


@dataclass(frozen=True)
class Throughput:
    calls: int
    errors: int
    seconds: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


async def seed_customers(settings: Settings, count: int) -> list[Credential]:
    engine = create_engine(settings)
    redis = create_redis_pipeline(settings)
    pool = create_pool(settings, size=1)
    await pool.open()
    try:
        await seed.ensure_settlement_account(engine)
        sessions = SessionStore(pool, redis, SessionEntrySigner(BENCH_SIGNING_KEY), ttl_s=3600,
                                absolute_ttl_s=43_200)
        credentials = []
        for n in range(count):
            user = await seed.create_user(engine, f"bench-{n}-{os.getpid()}@example.com", "",
                                          "Bench", password_hash="!")
            account = await seed.create_account(engine, user)
            await seed.deposit(engine, account, 10_000 + n)
            credentials.append((account, (await sessions.create(user)).token))
        return credentials
    finally:
        await pool.close()
        await redis.close()
        await engine.dispose()


Metadata = tuple[tuple[str, str], ...]


def auth_metadata(token: str, caller: str) -> Metadata:
    bearer = ("authorization", f"Bearer {token}")
    return (bearer, (EDGE_HEADER, "1")) if caller == "edge" else (bearer,)


class Requests:
    """One GetBalance request and its metadata per account."""

    def __init__(self, credentials: list[Credential], caller: str) -> None:
        self._requests = [account_pb2.GetBalanceRequest(account_id=a) for a, _ in credentials]
        self._metadata = [auth_metadata(token, caller) for _, token in credentials]

    def __len__(self) -> int:
        return len(self._requests)

    def __getitem__(self, n: int) -> tuple[account_pb2.GetBalanceRequest, Metadata]:
        return self._requests[n], self._metadata[n]


async def _latencies(target: str, credentials: list[Credential], calls: int,
                     caller: str) -> list[float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        requests = Requests(credentials, caller)
        for n in range(len(requests)):  # warm-up: every entry cached, every session hot
            for _ in range(3):
                request, metadata = requests[n]
                await stub.GetBalance(request, metadata=metadata)
        samples = []
        for n in range(calls):
            request, metadata = requests[n % len(requests)]
            started = time.perf_counter()
            await stub.GetBalance(request, metadata=metadata)
            samples.append(time.perf_counter() - started)
        return samples


def latency_worker(target: str, credentials: list[Credential], calls: int,
                   caller: str = "edge") -> list[float]:
    import uvloop

    return uvloop.run(_latencies(target, credentials, calls, caller))


async def _closed_loop(target: str, credentials: list[Credential], concurrency: int,
                       seconds: float, caller: str) -> tuple[int, int]:
    calls = errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        requests = Requests(credentials, caller)
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal calls, errors
            rng = random.Random()
            while time.perf_counter() < deadline:
                request, metadata = requests[rng.randrange(len(requests))]
                try:
                    await stub.GetBalance(request, metadata=metadata)
                    calls += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return calls, errors


def closed_loop_worker(target: str, credentials: list[Credential], concurrency: int,
                       seconds: float, caller: str = "edge") -> tuple[int, int]:
    import uvloop

    return uvloop.run(_closed_loop(target, credentials, concurrency, seconds, caller))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(folder: Path, pg: LocalPostgres, cluster: LocalRedisCluster, *,
                  cache_enabled: bool) -> tuple[ManagedProcess, int]:
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
        "BANK_DATABASE_URL": pg.service_dsn("account"),
        "BANK_REDIS_NODES": cluster.startup_nodes_csv,
        **cluster.users["account"].env(),
        "BANK_GRPC_PORT": str(port),
        "BANK_CACHE_ENABLED": "true" if cache_enabled else "false",
        "BANK_LOG_LEVEL": "WARNING",
        "BANK_SESSION_SIGNING_KEY": BENCH_SIGNING_KEY,
        # The check still runs on every counted call; only its threshold is out of reach.
        "BANK_RATE_LIMIT_PER_MINUTE": "100000000",
    }
    proc = ManagedProcess([sys.executable, "-m", "services.account"],
                          log_path=folder / f"account-cache-{cache_enabled}.log",
                          name="account", cwd=ROOT, env=env)
    proc.start()
    wait_for_port("127.0.0.1", port, timeout=30, process=proc)
    return proc, port


def measure(pool: multiprocessing.pool.Pool, target: str, service_pid: int,
            credentials: list[Credential], args: argparse.Namespace) -> tuple[list[float],
                                                                             Throughput]:
    samples = pool.apply(latency_worker,
                         (target, credentials[:50], args.latency_calls, args.caller))
    per_client = max(1, args.concurrency // args.clients)
    profiler = None
    if args.profile:  # py-spy on the service while the closed loop runs (where the CPU goes)
        profiler = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(service_pid),
             "--duration", str(int(args.seconds)), "--format", "raw", "--nonblocking",
             "-o", f"{args.profile}-{service_pid}.txt"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu_before = cpu_seconds(service_pid)
    started = time.perf_counter()
    results = pool.starmap(closed_loop_worker,
                           [(target, credentials, per_client, args.seconds, args.caller)]
                           * args.clients)
    elapsed = time.perf_counter() - started
    cpu_used = cpu_seconds(service_pid) - cpu_before
    if profiler is not None:
        profiler.wait(timeout=60)
    return samples, Throughput(sum(c for c, _ in results), sum(e for _, e in results),
                               elapsed, cpu_used)


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 1000) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="closed-loop duration")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--latency-calls", type=int, default=3000)
    parser.add_argument("--caller", choices=("edge", "internal"), default="edge",
                        help="edge: counted by the per-user limit, as requests through Envoy; "
                             "internal: an internal caller's call (not counted)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="also write py-spy raw stacks of the service to PREFIX-<pid>.txt")
    args = parser.parse_args()

    rows: dict[str, tuple[list[float], Throughput]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-account-") as tmp:
        folder = Path(tmp)
        pg = LocalPostgres(folder / "pg", durable=False)
        cluster = LocalRedisCluster(folder / "redis")
        services: list[ManagedProcess] = []
        context = multiprocessing.get_context("spawn")
        try:
            pg.start()
            upgrade_to_head(pg.owner_dsn)
            cluster.start()
            settings = Settings(database_url=pg.owner_dsn, redis_nodes=cluster.startup_nodes_csv,
                                session_signing_key=BENCH_SIGNING_KEY,
                                redis_username=cluster.admin.name,
                                redis_password=cluster.admin.password)
            credentials = asyncio.run(seed_customers(settings, args.accounts))
            with context.Pool(args.clients) as pool:
                for cache_enabled in (True, False):
                    proc, port = start_service(folder, pg, cluster, cache_enabled=cache_enabled)
                    services.append(proc)
                    assert proc.pid is not None
                    label = "cache on (hits)" if cache_enabled else "cache off (PostgreSQL)"
                    rows[label] = measure(pool, f"127.0.0.1:{port}", proc.pid, credentials, args)
                    proc.stop()
        finally:
            for proc in services:
                proc.stop()
            cluster.stop()
            pg.stop()

    print(f"\nGetBalance over gRPC, one account-service process, {os.cpu_count()} CPUs "
          f"(shared machine: figures vary with its load; load average "
          f"{' '.join(f'{n:.2f}' for n in os.getloadavg())} at the end)")
    print(f"{'mode':<24}{'p50 ms':>9}{'p99 ms':>9}{'closed-loop req/s':>19}{'errors':>8}"
          f"{'server CPU':>12}{'CPU/call us':>13}")
    for label, (samples, throughput) in rows.items():
        print(f"{label:<24}{percentile(samples, 0.50) * 1000:>9.3f}"
              f"{percentile(samples, 0.99) * 1000:>9.3f}{throughput.rate:>19.0f}"
              f"{throughput.errors:>8}{throughput.server_cpu_s / throughput.seconds:>11.0%}"
              f"{throughput.server_cpu_s / max(1, throughput.calls) * 1e6:>13.0f}")
    print(f"(latency: {args.latency_calls} sequential calls over 50 accounts after warm-up; "
          f"throughput: {args.concurrency} in flight from {args.clients} client process(es) "
          f"for {args.seconds:.0f} s over {args.accounts} accounts; caller: {args.caller})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
