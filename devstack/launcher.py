"""`make run`: the whole stack on 127.0.0.1 from the system's binaries, with demo data.

PostgreSQL (initdb in .run/), a six-node Redis Cluster, the migrations, demo data, every service
in devstack.components (several replicas where replicas matter) and the Envoy edge. While it
runs, a crashed service replica (or the edge) is restarted with backoff and the others keep
serving (devstack/supervisor.py). Ctrl-C stops everything this process started, by pid.

`python -m devstack.launcher --free-ports --run-dir DIR` runs a second stack on free ports beside
the first one (the chaos runs and the tests do); `DIR/stack.json` then says where everything
listens and which pid each process has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

from devstack.components import (
    COMPONENTS,
    GATEWAY_UPSTREAMS,
    POSTGRES_PORT,
    REDIS_PORTS,
    Component,
)
from devstack.demo_data import DEMO_PASSWORD, DemoUser, load_demo_data
from devstack.port_plan import PortPlan
from devstack.postgres import LocalPostgres
from devstack.processes import DevstackError, ManagedProcess, wait_for_port
from devstack.redis_acl import COMPONENT_USERS
from devstack.redis_cluster import LocalRedisCluster
from devstack.supervisor import Supervisor
from services.gateway.bundle import render_local
from services.gateway.envoy_binary import validate_config
from services.gateway.envoy_clusters import Upstream
from services.gateway.envoy_process import EnvoyProcess
from shared.config import Settings
from shared.db import create_engine
from shared.migrate import upgrade_to_head

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"


def _component_by_name(name: str) -> Component:
    return next(c for c in COMPONENTS if c.name == name)


def service_env(pg: LocalPostgres, cluster: LocalRedisCluster, component: Component,
                replica: int, session_signing_key: str,
                plan: PortPlan | None = None) -> dict[str, str]:
    plan = plan or PortPlan.fixed()
    ports = plan.ports(component, replica)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
        # Its own login (devstack.db_roles): what migration 0007 grants its group, no more.
        "BANK_DATABASE_URL": pg.service_dsn(component.name),
        "BANK_REDIS_NODES": cluster.startup_nodes_csv,
        "BANK_SERVICE_NAME": component.name,
        "BANK_LOG_JSON": "true",
        "BANK_ACCOUNT_TARGET": plan.grpc_target(_component_by_name("account")),
        "BANK_TRANSFER_TARGET": plan.grpc_target(_component_by_name("transfer")),
        "BANK_AUTH_TARGET": plan.grpc_target(_component_by_name("auth")),
    }
    if "grpc" in ports:
        env["BANK_GRPC_PORT"] = str(ports["grpc"])
        # Every gRPC service checks sessions; the relay has no use for the key.
        env["BANK_SESSION_SIGNING_KEY"] = session_signing_key
    if "metrics" in ports:
        env["BANK_METRICS_PORT"] = str(ports["metrics"])
    # Each process kind has its own Redis user (devstack/redis_acl.py); the retention jobs
    # have none, they do not use Redis.
    redis_user = COMPONENT_USERS.get(component.name)
    if redis_user is not None:
        env.update(cluster.users[redis_user].env())
    return env


class Stack:
    """The whole local stack. `make run` uses the fixed ports of devstack.components; the
    benchmarks pass their own folder, free ports for PostgreSQL and Redis (`free_ports`) and
    extra BANK_* settings (cache off/on); chaos runs and tests also give the services and the
    edge free ports (`service_ports=PortPlan.free()`)."""

    def __init__(self, run_dir: Path = RUN_DIR, *, free_ports: bool = False,
                 extra_env: dict[str, str] | None = None,
                 service_ports: PortPlan | None = None) -> None:
        self.run_dir = run_dir
        self.extra_env = dict(extra_env or {})
        self.plan = service_ports or PortPlan.fixed()
        # A fresh secret per run: sessions of an earlier run are not signed with it.
        self.session_signing_key = secrets.token_hex(32)
        self.pg = LocalPostgres(run_dir / "postgres", durable=True,
                                port=None if free_ports else POSTGRES_PORT)
        self.redis = LocalRedisCluster(run_dir / "redis",
                                       ports=None if free_ports else list(REDIS_PORTS))
        self.processes: list[ManagedProcess] = []
        self.edge: EnvoyProcess | None = None
        self.lines: list[str] = []
        self.edge_url: str | None = None
        self.demo_users: list[DemoUser] = []

    def start(self) -> list[DemoUser]:
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # every run starts from the same demo state
        self.run_dir.mkdir(parents=True)
        print("starting PostgreSQL ...", flush=True)
        self.pg.start()
        self.lines.append(f"PostgreSQL      {self.pg.dsn}")
        print("starting the Redis Cluster (3 masters + 3 replicas) ...", flush=True)
        self.redis.start()
        self.lines.append(f"Redis Cluster   {self.redis.startup_nodes_csv}")
        print("migrating and loading demo data ...", flush=True)
        upgrade_to_head(self.pg.owner_dsn)  # as the migrator, the schema's owner
        users = asyncio.run(self._demo_data())
        self.demo_users = users
        for component in COMPONENTS:
            assert component.module is not None
            for replica in range(component.replicas):
                self._start_replica(component, replica)
        self._start_edge()
        self.write_state()
        return users

    def supervisor(self) -> Supervisor:
        """A supervisor of every service replica and the edge (call its `check()` while the
        stack runs; stop calling it before `stop()`)."""
        supervisor = Supervisor()
        for proc in self.processes:
            supervisor.watch(proc)
        if self.edge is not None:
            supervisor.watch(self.edge)
        return supervisor

    def state(self) -> dict[str, object]:
        """Where everything listens and which pid each process has (`stack.json`)."""
        replicas = {}
        for component in COMPONENTS:
            for replica in range(component.replicas):
                name = f"{component.name}-{replica}"
                proc = next((p for p in self.processes if p.name == name), None)
                replicas[name] = {"pid": proc.pid if proc else None,
                                  **self.plan.ports(component, replica)}
        return {
            "postgres": {"dsn": self.pg.dsn, "pid": self.pg.pid},
            "redis": {str(port): pid for port, pid in self.redis.pids.items()},
            "services": replicas,
            "edge": {"url": self.edge_url, "admin_port": self.plan.edge_admin,
                     "pid": self.edge.pid if self.edge else None},
            "session_signing_key": self.session_signing_key,
            # For operators and `make bench --use-running`: the run's own Redis admin.
            "redis_admin": {"username": self.redis.admin.name,
                            "password": self.redis.admin.password},
        }

    def write_state(self) -> None:
        path = self.run_dir / "stack.json"
        path.touch(mode=0o600, exist_ok=True)  # it holds the run's secrets
        path.write_text(json.dumps(self.state(), indent=2) + "\n")

    async def _demo_data(self) -> list[DemoUser]:
        engine = create_engine(Settings(database_url=self.pg.owner_dsn, redis_nodes="unused"))
        try:
            return await load_demo_data(engine)
        finally:
            await engine.dispose()

    def _start_replica(self, component: Component, replica: int) -> None:
        assert component.module is not None
        name = f"{component.name}-{replica}"
        proc = ManagedProcess(
            [sys.executable, "-m", component.module],
            log_path=self.run_dir / "logs" / f"{name}.log",
            name=name,
            cwd=ROOT,
            env={**service_env(self.pg, self.redis, component, replica,
                               self.session_signing_key, self.plan), **self.extra_env},
        )
        (self.run_dir / "logs").mkdir(exist_ok=True)
        proc.start()
        self.processes.append(proc)
        ports = self.plan.ports(component, replica)
        listen = ports.get("grpc") or ports.get("metrics")
        if listen is not None:
            wait_for_port("127.0.0.1", listen, timeout=30, process=proc)
        described = ", ".join(f"{k} :{v}" for k, v in ports.items())
        self.lines.append(f"{name:<15} pid {proc.pid:<7} {described}")

    def _start_edge(self) -> None:
        plan = self.plan
        # The gateway's BANK_* settings as the services get theirs: this environment, then the
        # stack's own (the benchmark raises the per-address limit: all its load is 127.0.0.1).
        gateway_settings = Settings.from_env({**os.environ, **self.extra_env},
                                             database_url="", redis_nodes="")
        envoy = start_edge(self.run_dir / "gateway", local_upstreams(plan), plan.edge_https,
                           plan.edge_admin, settings=gateway_settings,
                           log_path=self.run_dir / "logs" / "gateway.log")
        self.edge = envoy
        self.edge_url = f"https://127.0.0.1:{plan.edge_https}"
        self.lines.append(f"{'gateway (Envoy)':<15} pid {envoy.pid:<7} {self.edge_url} (admin :{plan.edge_admin})")

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop(timeout=15)
        for proc in reversed(self.processes):
            proc.stop(timeout=15)
        self.redis.stop()
        self.pg.stop()


def local_upstreams(plan: PortPlan | None = None) -> list[Upstream]:
    """Every replica of the services behind the gateway, on its local port."""
    plan = plan or PortPlan.fixed()
    out = []
    for name in GATEWAY_UPSTREAMS:
        component = _component_by_name(name)
        out.append(Upstream(name, tuple(("127.0.0.1", plan.ports(component, i)["grpc"])
                                        for i in range(component.replicas))))
    return out


def start_edge(folder: Path, upstreams: list[Upstream], https_port: int, admin_port: int, *,
               settings: Settings | None = None, log_path: Path | None = None,
               timeout_s: float = 60.0) -> EnvoyProcess:
    """The gateway as `make run` runs it: the bundle rendered for these upstreams (a fresh
    self-signed certificate, `folder/tls.crt`), `envoy --mode validate`, then Envoy, returned
    once it is ready and every replica passes its health check."""
    settings = settings or Settings(database_url="", redis_nodes="")  # gateway fields only
    config = render_local(folder, settings, upstreams, https_port=https_port,
                          admin_port=admin_port)
    checked = validate_config(config)
    if checked.returncode != 0:
        raise DevstackError(f"the generated Envoy config is invalid:\n{checked.stdout}"
                            f"{checked.stderr}")
    # Its stdout is the JSON access log, one line per request.
    envoy = EnvoyProcess(config, admin_port, log_path or folder / "envoy.log", name="gateway")
    envoy.start()
    try:
        envoy.wait_ready(timeout_s)
        for upstream in upstreams:
            envoy.wait_healthy_hosts(upstream.name, len(upstream.endpoints), timeout_s)
    except BaseException:
        envoy.stop()
        raise
    return envoy


def _usage(stack: Stack, users: list[DemoUser]) -> str:
    edge_url = stack.edge_url or f"https://127.0.0.1:{stack.plan.edge_https}"
    account_grpc = stack.plan.ports(_component_by_name("account"), 0)["grpc"]
    alice, bob = users[0], users[1]
    return f"""
Try it (the certificate is self-signed, hence -k):

  TOKEN=$(curl -sk {edge_url}/v1/auth/login -H 'content-type: application/json' \\
      -d '{{"email":"{alice.email}","password":"{DEMO_PASSWORD}"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -sk {edge_url}/v1/accounts/{alice.account_id}/balance -H "authorization: Bearer $TOKEN"
  curl -sk {edge_url}/v1/transfers -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
      -H "Idempotency-Key: demo-$(date +%s)" \\
      -d '{{"fromAccountId":"{alice.account_id}","toAccountId":"{bob.account_id}","amount":{{"minorUnits":"1250","currency":"EUR"}},"description":"Lunch"}}'
  curl -sk {edge_url}/v1/accounts/{alice.account_id}/balance -H "authorization: Bearer $TOKEN"
  curl -sk {edge_url}/v1/auth/register -H 'content-type: application/json' \\
      -d '{{"email":"you@example.com","password":"a-long-passphrase-1","name":"You"}}'

API reference: {edge_url}/docs   OpenAPI: {edge_url}/openapi.json
gRPC reflection: grpcurl -plaintext 127.0.0.1:{account_grpc} list
Demo users: {alice.email} and {bob.email}, password {DEMO_PASSWORD}
Logs: {stack.run_dir / 'logs'}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.launcher", description=__doc__)
    parser.add_argument("--free-ports", action="store_true",
                        help="every server on a free port (a second stack beside `make run`)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="state folder (wiped)")
    args = parser.parse_args(argv)
    stack = Stack(args.run_dir.absolute(), free_ports=args.free_ports,
                  service_ports=PortPlan.free() if args.free_ports else None)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        users = stack.start()
        print("\nThe stack is up:\n  " + "\n  ".join(stack.lines))
        print(_usage(stack, users))
        print("Ctrl-C stops everything.", flush=True)
        supervisor = stack.supervisor()
        while not stopping.wait(0.5):
            for restart in supervisor.check():
                print(f"{restart.name} (pid {restart.old_pid}) had exited; restarted after"
                      f" {restart.after_s:.1f} s as pid {restart.new_pid}"
                      f" (restart {restart.restarts})", flush=True)
                stack.write_state()
        return 0
    finally:
        print("\nstopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
