"""The system under test: our own stack (devstack.launcher.Stack in a folder of its own, so the
run can restart the services with the cache off and on), or a stack that already runs
(`make run`), measured as it is."""

from __future__ import annotations

import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.components import (
    COMPONENTS,
    EDGE_HTTPS_PORT,
    POSTGRES_PORT,
    REDIS_PORTS,
    Component,
    grpc_target,
)
from devstack.launcher import RUN_DIR, Stack
from devstack.postgres import find_pg_bindir
from devstack.processes import wait_for_port
from devstack.redis_acl import RedisUser

HOST = "127.0.0.1"
DBNAME = "cachebank"
# The per-user limit of 100 requests a minute would turn most of a load test into 429s
# (the hottest bench user alone sends several per second), and every bench login comes from one
# address, 127.0.0.1, where real logins come from many: the per-address login limits (attempts in
# flight or failed per window, counted in PostgreSQL) would refuse most of them. The checks still
# run on every request; only their thresholds are out of reach.
BENCH_SERVICE_ENV = {"BANK_RATE_LIMIT_PER_MINUTE": "1000000000",
                     "BANK_LOGIN_MAX_FAILURES": "1000000000",
                     "BANK_LOGIN_ADDRESS_MAX_FAILURES": "1000000000",
                     # Envoy's per-address limit: the whole load comes from one address.
                     "BANK_EDGE_ADDRESS_LIMIT_PER_MINUTE": "1000000000"}
# The design's mix has a login for every ten requests: at its peak of 105 req/s the production
# argon2id parameters (64 MiB, 3 passes, 4 lanes: ~0.17 CPU s a login here) alone would need 1.6
# of the machine's 2 cores, and the run would measure password hashing instead of the cache.
# By default the bench's services hash with OWASP's minimum argon2id profile (19 MiB, 2 passes,
# 1 lane: ~0.02 CPU s); --production-argon2 keeps the services' defaults.
LIGHT_ARGON2_ENV = {"BANK_ARGON2_TIME_COST": "2", "BANK_ARGON2_MEMORY_KIB": "19456",
                    "BANK_ARGON2_PARALLELISM": "1"}


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def replica_listen_port(component: Component, replica: int) -> int | None:
    ports = component.ports(replica)
    return ports.get("grpc") or ports.get("metrics")


@dataclass(frozen=True)
class Endpoints:
    pg_host: str
    pg_port: int
    redis_ports: tuple[int, ...]
    edge_url: str | None
    redis_admin: RedisUser | None = None  # the bench's own looks into Redis (ACLs are on)

    @property
    def redis_env(self) -> dict[str, str]:
        return self.redis_admin.env() if self.redis_admin is not None else {}

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.pg_host}:{self.pg_port}/{DBNAME}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.pg_host}:{self.pg_port}/postgres"

    @property
    def redis_nodes_csv(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.redis_ports)


def running_replicas() -> dict[str, int]:
    """How many replicas of each of our components answer on their port right now."""
    out: dict[str, int] = {}
    for component in COMPONENTS:
        up = 0
        for replica in range(component.replicas):
            port = replica_listen_port(component, replica)
            if port is not None and port_open(port):
                up += 1
        if up:
            out[component.name] = up
    return out


def metrics_endpoints() -> list[str]:
    """Every replica's /metrics. Endpoints that do not answer are skipped when scraped."""
    return [f"{HOST}:{component.ports(replica)['metrics']}"
            for component in COMPONENTS for replica in range(component.replicas)
            if "metrics" in component.ports(replica)]


def grpc_targets() -> dict[str, str]:
    by_name = {c.name: c for c in COMPONENTS}
    return {name: grpc_target(by_name[name]) for name in ("account", "transfer", "auth")}


class OwnStack:
    """A fresh stack for this run only: PostgreSQL and Redis on free ports, the services on their
    usual ports (so `make run` must not be running at the same time)."""

    can_toggle_cache = True

    def __init__(self, run_dir: Path, *, production_argon2: bool = False) -> None:
        self.service_env = {**BENCH_SERVICE_ENV, **({} if production_argon2 else LIGHT_ARGON2_ENV)}
        self._stack = Stack(run_dir.absolute(), free_ports=True,
                            extra_env={**self.service_env, "BANK_CACHE_ENABLED": "false"})
        self.cache_enabled = False

    def start(self) -> Endpoints:
        busy = [f"{c.name}:{p}" for c in COMPONENTS for i in range(c.replicas)
                for p in c.ports(i).values() if port_open(p)]
        if busy:
            raise SystemExit(f"ports of the services are taken ({', '.join(busy[:4])} ...): "
                             "is `make run` up? Stop it, or pass --use-running to measure it.")
        self._stack.start()
        return self.endpoints()

    def endpoints(self) -> Endpoints:
        return Endpoints(HOST, self._stack.pg.port, tuple(self._stack.redis.ports),
                         self._stack.edge_url, self._stack.redis.admin)

    @property
    def pg_bindir(self) -> Path:
        return self._stack.pg.bindir

    @property
    def lines(self) -> list[str]:
        return list(self._stack.lines)

    def pids(self) -> dict[str, int]:
        """Replica name ("account-0") -> pid, for the profiler."""
        return {p.name: p.pid for p in self._stack.processes if p.pid is not None and p.alive}

    def process_groups(self) -> dict[str, list[int]]:
        """Root pids by process group, for CPU by process (bench/cpu.py): each replica, the
        gateway, PostgreSQL (the postmaster: its backends are its children) and Redis."""
        groups: dict[str, list[int]] = {name: [pid] for name, pid in self.pids().items()}
        edge = self._stack.edge
        if edge is not None and edge.pid is not None:
            groups["gateway (Envoy)"] = [edge.pid]
        if self._stack.pg.pid is not None:
            groups["postgres"] = [self._stack.pg.pid]
        groups["redis"] = [pid for pid in self._stack.redis.pids.values() if pid is not None]
        return groups

    def set_cache(self, enabled: bool) -> float:
        """Restart every service replica with the cache on or off; returns the seconds it took."""
        started = time.monotonic()
        value = "true" if enabled else "false"
        replicas = {f"{c.name}-{i}": (c, i) for c in COMPONENTS for i in range(c.replicas)}
        ours = [p for p in self._stack.processes if p.name in replicas]
        for proc in ours:
            proc.send_signal(signal.SIGTERM)  # all drain at once, then each is waited for
        for proc in ours:
            proc.stop(timeout=15)
        for proc in ours:
            assert proc.env is not None
            proc.env["BANK_CACHE_ENABLED"] = value
            proc.start()
        for proc in ours:
            component, replica = replicas[proc.name]
            port = replica_listen_port(component, replica)
            if port is not None:
                wait_for_port(HOST, port, timeout=30, process=proc)
        self.cache_enabled = enabled
        return time.monotonic() - started

    def stop(self) -> None:
        for proc in self._stack.processes:
            proc.send_signal(signal.SIGTERM)  # drain in parallel; Stack.stop then waits for each
        self._stack.stop()


class RunningStack:
    """`make run`'s stack, on the fixed ports of devstack.components. Its services keep the cache
    setting they were started with."""

    can_toggle_cache = False
    cache_enabled = True  # what make run starts with; the report says it could not be switched
    service_env: dict[str, str] = {}  # the services run with their defaults

    def start(self) -> Endpoints:
        if not port_open(POSTGRES_PORT):
            raise SystemExit(f"--use-running: nothing listens on PostgreSQL's port {POSTGRES_PORT}"
                             " (start the stack with `make run`)")
        edge = f"https://{HOST}:{EDGE_HTTPS_PORT}" if port_open(EDGE_HTTPS_PORT) else None
        return Endpoints(HOST, POSTGRES_PORT, REDIS_PORTS, edge, _running_redis_admin())

    @property
    def pg_bindir(self) -> Path:
        return find_pg_bindir()

    @property
    def lines(self) -> list[str]:
        return [f"running stack (make run): PostgreSQL :{POSTGRES_PORT}, Redis {REDIS_PORTS}"]

    def pids(self) -> dict[str, int]:
        return {}  # not our processes

    def process_groups(self) -> dict[str, list[int]]:
        return {}

    def set_cache(self, enabled: bool) -> float:
        raise RuntimeError("a running stack keeps its cache setting")

    def stop(self) -> None:
        pass  # not ours


def _running_redis_admin() -> RedisUser | None:
    """`make run` writes its Redis admin user into .run/stack.json."""
    try:
        admin = json.loads((RUN_DIR / "stack.json").read_text())["redis_admin"]
    except (OSError, ValueError, KeyError):
        return None
    return RedisUser(admin["username"], admin["password"])
