"""One benchmark run, in order: stack, bench users, the mixed workload with the cache off and
on, the closed-loop maxima, the raw-server baselines; then the report."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench import baseline
from bench.config import BenchConfig
from bench.drivers import Target
from bench.loadgen import LoadGenerator, PhaseSpec
from bench.model import Baselines, BenchRun, MixedPhase, PhaseResult, Step
from bench.observe import (
    CpuSnapshot,
    DatabaseSampler,
    DatabaseSnapshot,
    MetricsSnapshot,
    RedisSnapshot,
    open_monitor_connection,
)
from bench.population import BenchUser, create_bench_users, load_users, save_users
from bench.profiling import Profiler
from bench.server_side import Observation, ServerObserver
from bench.stack import (
    DBNAME,
    Endpoints,
    OwnStack,
    RunningStack,
    grpc_targets,
    metrics_endpoints,
    port_open,
    running_replicas,
)
from bench.workload import HOT_USER, Op, OperationMix
from bench.wrk import run_closed_loop, wrk_available
from devstack.components import COMPONENTS
from devstack.processes import DevstackError
from devstack.redis_acl import RedisUser
from shared.config import Settings
from shared.db import create_engine
from shared.events import partition_of

Log = Callable[[str], None]
# The services' partition count (Settings.event_partitions: the bench does not change it).
EVENT_PARTITIONS: int = Settings(database_url="", redis_nodes="").event_partitions


def choose_target(via: str, endpoints: Endpoints) -> Target:
    """The path to measure: the edge (Envoy, the production path), else gRPC."""
    grpc = grpc_targets()
    account = next(c for c in COMPONENTS if c.name == "account")
    candidates: dict[str, Target | None] = {
        "edge": Target("edge", base_urls=(endpoints.edge_url,)) if endpoints.edge_url else None,
        "grpc": (Target("grpc", account_target=grpc["account"],
                        transfer_target=grpc["transfer"], auth_target=grpc["auth"])
                 if account.grpc_port and port_open(account.grpc_port) else None),
    }
    order = ["edge", "grpc"] if via == "auto" else [via]
    for name in order:
        target = candidates.get(name)
        if target is not None:
            return target
    raise SystemExit(f"--via {via}: nothing answers there (services up: {running_replicas()})")


class Runner:
    def __init__(self, config: BenchConfig, log: Log = print) -> None:
        self.config = config
        self.users_path = _users_file(config)
        self._began = time.monotonic()
        self._print = log
        self._loaded_users: list[BenchUser] | None = None

    def log(self, line: str) -> None:
        self._print(f"[{time.monotonic() - self._began:5.1f} s] {line}")

    def run(self) -> BenchRun:
        began = time.monotonic()
        load_before = os.getloadavg()[0]
        cfg = self.config
        generator = LoadGenerator(cfg.workers)
        stack: OwnStack | RunningStack | None = None
        try:
            stack, endpoints = self._start_stack()
            run = self._run_on(stack, endpoints, generator)
        finally:
            generator.close()
            if stack is not None:
                self.log("stopping the stack ...")
                stack.stop()
        run.elapsed_s = time.monotonic() - began
        run.notes.append(
            f"Machine load average (1 min): {load_before:.1f} when the run began, "
            f"{os.getloadavg()[0]:.1f} at its end, on 2 cores. Anything else running on the "
            "machine (other test suites) takes CPU from the stack and shows in these figures.")
        return run

    def _start_stack(self) -> tuple[OwnStack | RunningStack, Endpoints]:
        cfg = self.config
        if cfg.use_running:
            self.log("attaching to the stack ...")
            running = RunningStack()
            return running, running.start()
        self.log("starting the stack ...")
        stack = OwnStack(cfg.run_dir, production_argon2=cfg.production_argon2)
        try:
            return stack, stack.start()
        except DevstackError as err:
            stack.stop()
            # The fixed ports (devstack/components.py) lie below the kernel's ephemeral range,
            # so a busy port means another stack (`make run`, another benchmark) holds it.
            raise SystemExit(
                f"the stack did not start: {str(err).splitlines()[0]}\n(logs under "
                f"{cfg.run_dir / 'logs'}; is another stack or benchmark running? "
                "`--use-running` measures a running one)") from None

    def _run_on(self, stack: OwnStack | RunningStack, endpoints: Endpoints,
                generator: LoadGenerator) -> BenchRun:
        cfg = self.config
        # The services' own settings: the bench users' password hash then has the parameters
        # the auth service verifies with (no rehash on the first login).
        settings = Settings.from_env({**stack.service_env, "BANK_DATABASE_URL": endpoints.dsn,
                                      "BANK_REDIS_NODES": endpoints.redis_nodes_csv,
                                      **endpoints.redis_env,
                                      "BANK_SERVICE_NAME": "bench"})
        self.log(f"creating {cfg.users} bench users (accounts, deposits, sessions) ...")
        users = asyncio.run(_create_users(settings, cfg.users))
        save_users(users, self.users_path)  # read by every phase's worker processes
        target = choose_target(cfg.via, endpoints)
        run = BenchRun(
            started_at=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            quick=cfg.quick, path=target.describe(), via=target.via,
            services=running_replicas(), stack_lines=stack.lines, users=cfg.users,
            zipf_exponent=cfg.zipf_exponent, mix=cfg.mix.describe(), arrivals=_arrivals(cfg),
            read_share=cfg.mix.read_share, read_p99_goal_s=cfg.read_p99_goal_s,
            transfer_p95_goal_s=cfg.transfer_p95_goal_s,
        )
        self.log(f"measuring {target.describe()}")
        run.notes.append(
            f"Password hashing (argon2id) in this run: {settings.argon2_memory_kib // 1024} MiB, "
            f"{settings.argon2_time_cost} passes, {settings.argon2_parallelism} lane(s)"
            + ("" if cfg.production_argon2 or cfg.use_running else
               " (OWASP's minimum profile instead of the services' 64 MiB / 3 / 4: at the design's"
               " peak a login every ten requests would otherwise need 1.6 of the 2 cores; "
               "--production-argon2 measures with the defaults)") + ".")
        cache_settings = [False, True] if stack.can_toggle_cache else [stack.cache_enabled]
        if not stack.can_toggle_cache:
            run.notes.append("A running stack was measured as it is: its cache setting could "
                             "not be switched, so there is no cache-off column, and its rate "
                             "limits are the production ones (expect 429s from hot users).")
        if "mixed" in cfg.phases:
            for enabled in cache_settings:
                restart_s = 0.0
                if isinstance(stack, OwnStack) and stack.cache_enabled != enabled:
                    self.log(f"restarting the services with the cache {_on_off(enabled)} ...")
                    restart_s = stack.set_cache(enabled)
                    target = choose_target(target.via, stack.endpoints())
                run.mixed.append(self._mixed_phase(generator, target, endpoints, enabled,
                                                   restart_s))
        elif isinstance(stack, OwnStack) and not stack.cache_enabled:
            self.log("restarting the services with the cache on ...")
            stack.set_cache(True)
            target = choose_target(target.via, stack.endpoints())
        if not (stack.can_toggle_cache or stack.cache_enabled):
            run.notes.append("The cache was off for the maxima below.")
        if self._wrk_for(target) and {"reads", "transfers", "hot"} & set(cfg.phases):
            run.notes.append("The closed-loop maxima through the edge were driven by wrk (one "
                             "thread): its CPU per request is a fraction of the Python "
                             "generator's, which the stack would otherwise lose on 2 cores.")
        observer = ServerObserver(stack, endpoints, cfg.results_dir / ".work" / "profiles")
        if "reads" in cfg.phases:
            run.read_steps = self._steps(generator, target, Op.BALANCE, cfg.read_concurrency,
                                         99, cfg.read_p99_goal_s, stack, 64,
                                         ["account-0", "auth-0"], run)
        if "transfers" in cfg.phases:
            run.transfer_steps = self._steps(generator, target, Op.TRANSFER,
                                             cfg.transfer_concurrency, 95,
                                             cfg.transfer_p95_goal_s, stack, 32,
                                             ["transfer-0", "account-0"], run, observer)
        if "hot" in cfg.phases:
            run.transfer_alone = self._transfer_alone(endpoints)
            run.hot, run.hot_share = self._hot_account(generator, target, observer), cfg.hot_share
        if "baseline" in cfg.phases and not cfg.skip_baseline:
            run.baselines = self._baselines(stack, endpoints)
        return run

    def _hot_account(self, generator: LoadGenerator, target: Target,
                     observer: ServerObserver) -> Step:
        """Transfers at `hot_concurrency` clients, `hot_share` of them touching one account."""
        cfg = self.config
        spec = PhaseSpec(f"hot account, {cfg.hot_concurrency} concurrent, "
                         f"{cfg.hot_share:.0%} on one account", OperationMix.only(Op.TRANSFER),
                         duration_s=cfg.step_seconds + cfg.step_warmup_seconds,
                         warmup_s=cfg.step_warmup_seconds, zipf_exponent=cfg.zipf_exponent,
                         seed=cfg.seed + 7, concurrency=cfg.hot_concurrency,
                         hot_share=cfg.hot_share)
        with observer.observe(profile=True, seconds=spec.duration_s) as seen:
            result = self._closed_loop(generator, target, spec, Op.TRANSFER)
        tail = result.histogram().percentile_s(95)
        self.log(f"{spec.name}: {result.throughput:.0f}/s, p95 {tail * 1000:.1f} ms, "
                 f"{result.error_count} errors, {seen.server.deadlocks if seen.server else '?'}"
                 " deadlocks")
        return Step(cfg.hot_concurrency, result, seen.server)

    def _transfer_alone(self, endpoints: Endpoints) -> baseline.TransferAlone | None:
        """transfer_money back to back from one client, on the idle server: the yardstick of
        the hot account's serial transfers."""
        users = self._users()
        hot, other = users[HOT_USER], users[HOT_USER + 1]
        partitions = (partition_of(hot.account_id, EVENT_PARTITIONS),
                      partition_of(other.account_id, EVENT_PARTITIONS))
        try:
            alone = baseline.transfer_money_alone(endpoints.dsn, hot.user_id, hot.account_id,
                                                  other.account_id, partitions)
        except psycopg.Error as err:
            self.log(f"transfer_money alone: {err}")
            return None
        self.log(f"transfer_money alone: {alone.client_ms:.2f} ms a call, {alone.exec_ms:.2f} ms "
                 "inside")
        return alone

    def _closed_loop(self, generator: LoadGenerator, target: Target, spec: PhaseSpec,
                     op: Op) -> PhaseResult:
        if self._wrk_for(target):
            return run_closed_loop(target, spec, op, self._users(),
                                   self.config.results_dir / ".work" / "wrk")
        return generator.run_phase(target, spec, self.users_path, self.config.workers)

    def _mixed_phase(self, generator: LoadGenerator, target: Target, endpoints: Endpoints,
                     enabled: bool, restart_s: float) -> MixedPhase:
        cfg = self.config
        # With the cache on, the warm-up brings it to what a running system has (config.py).
        warmup_s = cfg.cache_warmup_seconds if enabled else cfg.warmup_seconds
        spec = PhaseSpec(f"mixed, cache {_on_off(enabled)}", cfg.mix,
                         duration_s=cfg.mixed_seconds + warmup_s,
                         warmup_s=warmup_s, zipf_exponent=cfg.zipf_exponent,
                         seed=cfg.seed, rate=cfg.rate, visits=cfg.arrivals == "visits",
                         think_s=cfg.think_seconds)
        # One process sends a few hundred requests a second with room to spare.
        workers = 1 if cfg.rate <= 400 else cfg.workers
        self.log(f"{spec.name}: open loop at {cfg.rate:g} req/s for "
                 f"{warmup_s:g} s warm-up + {cfg.mixed_seconds:g} s ...")
        scrape_from = metrics_endpoints()
        with open_monitor_connection(endpoints.admin_dsn) as monitor, \
                DatabaseSampler(endpoints.admin_dsn, DBNAME) as sampler:
            pending = generator.start_phase(target, spec, self.users_path, workers)
            # The servers' counters cover the same window as the client's figures.
            time.sleep(max(0.0, pending.start_wall + warmup_s - time.time()))
            metrics_before = MetricsSnapshot.take(scrape_from)
            redis_before = RedisSnapshot.take(endpoints.redis_ports, endpoints.redis_admin)
            db_before = DatabaseSnapshot.take(monitor, DBNAME, per_statement=True)
            cpu_before = CpuSnapshot.take()
            result = pending.wait()
            cpu_after = CpuSnapshot.take()
            # PostgreSQL publishes a backend's counters when it goes idle (at most once a second).
            time.sleep(1.1)
            db_after = DatabaseSnapshot.take(monitor, DBNAME, per_statement=True)
            redis_after = RedisSnapshot.take(endpoints.redis_ports, endpoints.redis_admin)
            metrics_after = MetricsSnapshot.take(scrape_from)
        self.log(f"  {result.completed} requests, {result.error_count} errors, "
                 f"{result.throughput:.0f} req/s")
        return MixedPhase(
            cache_enabled=enabled, rate=cfg.rate, result=result,
            metrics=metrics_after.delta(metrics_before),
            metrics_endpoints=metrics_after.answered,
            redis_before=redis_before, redis_after=redis_after,
            db_before=db_before, db_after=db_after,
            db_series=sampler.rate_series(pending.start_wall), restart_s=restart_s,
            cpu_before=cpu_before, cpu_after=cpu_after,
        )

    def _steps(self, generator: LoadGenerator, target: Target, op: Op, levels: tuple[int, ...],
               percentile: float, goal_s: float, stack: OwnStack | RunningStack,
               profile_near: int, profile_names: list[str], run: BenchRun,
               observer: ServerObserver | None = None) -> list[Step]:
        """`observer`: what the servers did at each step (CPU by process, statements, PostgreSQL's
        waits and perf at the profiled step)."""
        cfg = self.config
        steps: list[Step] = []
        profile_level = min(levels, key=lambda level: abs(level - profile_near), default=0)
        pids = {name: pid for name, pid in stack.pids().items() if name in profile_names}
        for concurrency in levels:
            profiling = cfg.profile and concurrency == profile_level
            profiler = None
            if profiling and pids and Profiler.available():
                profiler = Profiler(cfg.results_dir / ".work" / "profiles" / op.value)
                profiler.start(pids, cfg.step_seconds + cfg.step_warmup_seconds)
            spec = PhaseSpec(f"{op.value} max, {concurrency} concurrent", OperationMix.only(op),
                             duration_s=cfg.step_seconds + cfg.step_warmup_seconds,
                             warmup_s=cfg.step_warmup_seconds, zipf_exponent=cfg.zipf_exponent,
                             seed=cfg.seed + concurrency, concurrency=concurrency)
            watching = (observer.observe(profile=profiling, seconds=spec.duration_s)
                        if observer is not None else contextlib.nullcontext(Observation()))
            with watching as seen:
                result = self._closed_loop(generator, target, spec, op)
            tail = result.histogram().percentile_s(percentile)
            self.log(f"{spec.name}: {result.throughput:.0f}/s, p{percentile:g} "
                     f"{tail * 1000:.1f} ms, {result.error_count} errors")
            steps.append(Step(concurrency, result, seen.server))
            if profiler is not None:
                context = f"{op.value}, {concurrency} concurrent, via {target.via}"
                run.profiles += [(context, summary) for summary in profiler.finish()]
            if not result.completed or (tail > 3 * goal_s and concurrency >= profile_level):
                break  # far past the goal: more concurrency only queues
        return steps

    def _wrk_for(self, target: Target) -> bool:
        """The edge's maxima are driven by wrk when it is installed (bench/wrk.py says why)."""
        return self.config.load in ("auto", "wrk") and target.via == "edge" and wrk_available()

    def _users(self) -> list[BenchUser]:
        if self._loaded_users is None:
            self._loaded_users = load_users(self.users_path)
        return self._loaded_users

    def _baselines(self, stack: OwnStack | RunningStack, endpoints: Endpoints) -> Baselines:
        cfg = self.config
        out = Baselines()
        self.log(f"baseline: pgbench tpcb-like, {cfg.pgbench_clients} clients, "
                 f"{cfg.pgbench_seconds} s ...")
        try:
            pg = baseline.run_pgbench(stack.pg_bindir, endpoints.admin_dsn, endpoints.pg_host,
                                      endpoints.pg_port, scale=cfg.pgbench_scale,
                                      clients=cfg.pgbench_clients, seconds=cfg.pgbench_seconds)
            out.pgbench_tps, out.pgbench_latency_ms = pg.tps, pg.latency_avg_ms
            out.pgbench_setup = (f"tpcb-like, scale {pg.scale}, {pg.clients} clients, 2 threads, "
                                 f"{pg.seconds} s, same server (fsync as configured)")
        except (RuntimeError, OSError, psycopg.Error, ValueError) as err:
            out.errors.append(f"pgbench: {err}")
        self.log("baseline: redis-benchmark GET ...")
        try:
            masters = _masters(endpoints.redis_ports, endpoints.redis_admin)
            rb = baseline.run_redis_benchmark(endpoints.pg_host, masters[0],
                                              user=endpoints.redis_admin,
                                              clients=cfg.redis_benchmark_clients,
                                              requests=cfg.redis_benchmark_requests)
            out.redis_get_rps = rb.rps
            out.redis_get_p50_ms, out.redis_get_p99_ms = rb.p50_ms, rb.p99_ms
            out.redis_setup = (f"GET, {rb.clients} clients, {rb.requests} requests, no pipelining,"
                               f" --cluster ({len(masters)} masters)")
        except (RuntimeError, OSError, ValueError) as err:
            out.errors.append(f"redis-benchmark: {err}")
        return out


def _masters(ports: tuple[int, ...], user: RedisUser | None) -> list[int]:
    import redis

    masters = []
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0,
                             username=user.name if user else None,
                             password=user.password if user else None)
        try:
            if client.info("replication").get("role") == "master":
                masters.append(port)
        finally:
            client.close()
    if not masters:
        raise RuntimeError("no Redis master answers")
    return masters


def _arrivals(cfg: BenchConfig) -> str:
    if cfg.arrivals == "visits":
        return (f"open-loop Poisson arrivals of user visits, each the day's requests in a row "
                f"(log in, balance, recent transactions, then the rest shuffled) "
                f"~{cfg.think_seconds:g} s apart")
    return "open-loop Poisson arrivals of independent requests, each from a Zipf-chosen user"


def _on_off(enabled: bool) -> str:
    return "on" if enabled else "off"


def _users_file(cfg: BenchConfig) -> Path:
    folder = cfg.results_dir / ".work"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "users.json"


async def _create_users(settings: Settings, count: int) -> list[BenchUser]:
    engine = create_engine(settings, pool_size=20)
    try:
        return await create_bench_users(engine, settings, count)
    finally:
        await engine.dispose()
