"""A local Redis Cluster (default 3 masters + 3 replicas) on 127.0.0.1.

Each node is a foreground ``redis-server`` we own by pid. Nodes persist nothing
but their ``nodes-P.conf`` (cluster topology), which is what lets a killed node
restarted with ``start_node()`` rejoin the cluster (as a replica, if it was
failed over).

ACLs are on as in production: the users of devstack/redis_acl.py with fresh
passwords per cluster (``users``), the default user off, replication and the
admin queries here as the admin user. The passwords stay in files (mode 0600),
never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.ports import HOST, free_redis_ports
from devstack.processes import DevstackError, ManagedProcess, wait_for_port
from devstack.redis_acl import ADMIN_USER, RedisUser, acl_file, new_users
from shared.redis_pipeline import RedisCredentials

__all__ = ["LocalRedisCluster", "NodeInfo", "CLUSTER_SLOTS"]

CLUSTER_SLOTS = 16384
_DEPS_HINT = "run scripts/ensure-system-deps.sh (installs redis-server, redis-tools)"


def _find_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DevstackError(f"{name} not found on PATH; {_DEPS_HINT}")
    return path


class NodeInfo:
    """One line of CLUSTER NODES, as seen by some node."""

    __slots__ = ("node_id", "port", "flags", "master_id", "link_state", "slots")

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.node_id = fields[0]
        # "127.0.0.1:7000@17000" or, in Redis 7, "127.0.0.1:7000@17000,hostname".
        addr = fields[1].split("@", 1)[0]
        self.port = int(addr.rsplit(":", 1)[1]) if ":" in addr else 0
        self.flags = frozenset(fields[2].split(","))
        self.master_id = fields[3]
        self.link_state = fields[7]
        self.slots = fields[8:]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)

    def __repr__(self) -> str:
        return f"<NodeInfo {self.port} {','.join(sorted(self.flags))} {self.link_state}>"


class LocalRedisCluster:
    """``masters * (1 + replicas)`` redis-server nodes in cluster mode.

    Node ``P`` lives in ``base_dir/node-P`` (its nodes-P.conf and redis.log).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        maxmemory: str = "256mb",
        ports: list[int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if masters < 3:
            # redis-cli --cluster create refuses fewer than 3 masters.
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.base_dir = Path(base_dir).absolute()
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.maxmemory = maxmemory
        self.start_timeout = start_timeout
        n_nodes = masters * (1 + replicas)
        if ports is not None and len(ports) != n_nodes:
            raise ValueError(f"need exactly {n_nodes} ports, got {len(ports)}")
        self._ports: list[int] | None = list(ports) if ports is not None else None
        self._n_nodes = n_nodes
        self._procs: dict[int, ManagedProcess] = {}
        # One set of passwords for the object's life: a restarted node keeps its users.
        self.users: dict[str, RedisUser] = new_users()

    @property
    def admin(self) -> RedisUser:
        return self.users[ADMIN_USER]

    def credentials(self, name: str = ADMIN_USER) -> RedisCredentials:
        """For a ClusterPipeline made by hand (tests, chaos probes)."""
        return RedisCredentials(name, self.users[name].password)

    def user_settings(self, name: str) -> dict[str, str]:
        """Settings fields (redis_username, redis_password) for a process acting as `name`."""
        return self.users[name].settings()

    # -- addresses ---------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        if self._ports is None:
            raise DevstackError("LocalRedisCluster has no ports until start() is called")
        return list(self._ports)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, p) for p in self.ports]

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{p}" for p in self.ports]

    @property
    def startup_nodes_csv(self) -> str:
        """Settings form: ``"127.0.0.1:7000,127.0.0.1:7001,..."``."""
        return ",".join(f"{HOST}:{p}" for p in self.ports)

    def pid(self, port: int) -> int | None:
        proc = self._procs.get(port)
        return proc.pid if proc is not None else None

    @property
    def pids(self) -> dict[int, int | None]:
        """Port -> pid of the current (or last) process of each node."""
        return {p: proc.pid for p, proc in self._procs.items()}

    def node_alive(self, port: int) -> bool:
        proc = self._procs.get(port)
        return proc is not None and proc.alive

    def alive_ports(self) -> list[int]:
        return [p for p in self.ports if self.node_alive(p)]

    def node_dir(self, port: int) -> Path:
        return self.base_dir / f"node-{port}"

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> LocalRedisCluster:
        """Start fresh nodes, create the cluster, wait until it is healthy.

        After ``stop()`` this creates a new, empty cluster on the same ports.
        """
        if self._ports is not None and self.alive_ports():
            raise DevstackError("LocalRedisCluster.start(): nodes are already running")
        self._procs = {}
        if self._ports is None:
            self._ports = free_redis_ports(self._n_nodes)
        try:
            self._write_security_config()
            for port in self.ports:
                # Nothing of a previous run is worth keeping (no RDB/AOF), and a
                # stale nodes-P.conf would make `--cluster create` refuse the node.
                shutil.rmtree(self.node_dir(port), ignore_errors=True)
                self.node_dir(port).mkdir(parents=True)
                self._spawn(port)
            for port in self.ports:
                wait_for_port(HOST, port, timeout=self.start_timeout, process=self._procs[port])
            self._create_cluster()
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node; idempotent. Node dirs are left for post-mortems."""
        self.stop_all_nodes(timeout)

    def kill_node(self, port: int) -> None:
        """SIGKILL one node (a crash, as seen by the rest of the cluster)."""
        self._node(port).kill()

    def stop_node(self, port: int, timeout: float = 10.0) -> None:
        """Graceful SIGTERM stop of one node."""
        self._node(port).stop(timeout)

    def start_node(self, port: int, *, timeout: float | None = None) -> None:
        """Restart a stopped/killed node on the same port and dir; it rejoins."""
        proc = self._node(port)
        if proc.alive:
            return
        proc.start()
        wait_for_port(HOST, port, timeout=timeout or self.start_timeout, process=proc)

    def pause_node(self, port: int) -> None:
        """SIGSTOP one node: its sockets stay open and silent (a hung node, not a dead one)."""
        self._node(port).send_signal(signal.SIGSTOP)

    def resume_node(self, port: int) -> None:
        """SIGCONT a paused node."""
        self._node(port).send_signal(signal.SIGCONT)

    def pause_all_nodes(self) -> None:
        for port in self.alive_ports():
            self.pause_node(port)

    def resume_all_nodes(self) -> None:
        for port in self.alive_ports():
            self.resume_node(port)

    def stop_all_nodes(self, timeout: float = 10.0) -> None:
        for proc in self._procs.values():
            proc.send_signal(signal.SIGCONT)  # a paused node would not hear the SIGTERM
            proc.send_signal(signal.SIGTERM)  # all first so they shut down in parallel
        for proc in self._procs.values():
            proc.stop(timeout)

    def start_all_nodes(self, *, wait: bool = True) -> None:
        """Restart every stopped node (same ports/dirs); optionally wait_healthy()."""
        for proc in self._procs.values():
            if not proc.alive:
                proc.start()
        for port, proc in self._procs.items():
            wait_for_port(HOST, port, timeout=self.start_timeout, process=proc)
        if wait:
            self.wait_healthy(self.start_timeout)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin queries -----------------------------------------------------------

    def client(self, port: int, *, timeout: float = 2.0) -> redis.Redis:
        """A plain (non-cluster) client for one node; close it (use ``with``)."""
        return redis.Redis(
            host=HOST,
            port=port,
            username=self.admin.name,
            password=self.admin.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            # Admin polling wants fast, honest failures, not hidden retries.
            retry=Retry(NoBackoff(), 0),
        )

    def _command(self, port: int, *args: str) -> str:
        with self.client(port) as r:
            # Split "CLUSTER INFO" into words so redis-py returns the raw text
            # instead of applying (version-dependent) response callbacks.
            return str(r.execute_command(*args))

    def cluster_info(self, port: int) -> dict[str, str]:
        text = self._command(port, "CLUSTER", "INFO")
        info: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition(":")
            if sep:
                info[key] = value
        return info

    def cluster_nodes(self, port: int) -> list[NodeInfo]:
        text = self._command(port, "CLUSTER", "NODES")
        return [NodeInfo(line) for line in text.splitlines() if line.strip()]

    def _any_view(self) -> list[NodeInfo]:
        errors: list[str] = []
        for port in self.alive_ports():
            try:
                return self.cluster_nodes(port)
            except redis.RedisError as exc:
                errors.append(f"{port}: {exc}")
        raise DevstackError(f"no Redis node answered CLUSTER NODES: {errors}")

    def masters(self) -> list[int]:
        """Ports of the masters not flagged as failing, as seen by a live node."""
        return sorted(n.port for n in self._any_view() if n.is_master and not n.failed)

    def replicas(self) -> list[int]:
        return sorted(n.port for n in self._any_view() if not n.is_master and not n.failed)

    def master_for_key(self, key: str | bytes) -> int:
        """Port of the master currently serving ``key``'s hash slot."""
        from redis.crc import key_slot

        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for node in self._any_view():
            if not node.is_master or node.failed:
                continue
            for rng in node.slots:
                if rng.startswith("["):  # slot being migrated/imported
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return node.port
        raise DevstackError(f"no live master serves slot {slot}")

    def replicas_of(self, master_port: int) -> list[int]:
        view = self._any_view()
        ids = {n.node_id for n in view if n.port == master_port}
        return sorted(n.port for n in view if n.master_id in ids and not n.failed)

    def health_problems(self) -> dict[int, list[str]]:
        """What keeps the live nodes from being healthy (empty dict: healthy).

        Healthy means, on every live node: cluster_state:ok; all 16384 slots
        assigned and ok; no slot owned by a node whose process is down; every
        live node seen connected, not flagged failing, and with the role (and
        master) it reports for itself (gossip can show stale roles for a moment
        after ``--cluster create`` or a rejoin while cluster_state is already
        ok); and every replica of a live master has its replication link up. A
        replica that never finished its first sync refuses to fail over, so a
        failover test started before that point would hang.
        """
        alive = set(self.alive_ports())
        if not alive:
            return {0: ["no Redis node is running"]}
        problems: dict[int, list[str]] = {}
        views: dict[int, list[NodeInfo]] = {}
        for port in sorted(alive):
            mine: list[str] = problems.setdefault(port, [])
            try:
                info = self.cluster_info(port)
                views[port] = self.cluster_nodes(port)
            except redis.RedisError as exc:
                mine.append(f"{type(exc).__name__}: {exc}")
                continue
            if info.get("cluster_state") != "ok":
                mine.append(f"cluster_state:{info.get('cluster_state')}")
            for key in ("cluster_slots_assigned", "cluster_slots_ok"):
                if info.get(key) != str(CLUSTER_SLOTS):
                    mine.append(f"{key}:{info.get(key)}")
        # Each node's own opinion of its role: (is_master, master_id).
        self_role = {
            port: (n.is_master, n.master_id)
            for port, view in views.items()
            for n in view
            if "myself" in n.flags
        }
        for port, view in views.items():
            for n in view:
                if n.port not in alive:
                    # We know before the cluster does that a killed master is gone:
                    # healthy means its slots have been failed over already.
                    if n.is_master and n.slots:
                        problems[port].append(f"slots still owned by down node {n.port}")
                    continue
                if n.failed or n.link_state != "connected":
                    problems[port].append(f"sees {n!r}")
                elif n.port in self_role and (n.is_master, n.master_id) != self_role[n.port]:
                    problems[port].append(f"stale role for {n.port}: {n!r}")
        for port, view in views.items():
            me = next((n for n in view if "myself" in n.flags), None)
            if me is None or me.is_master:
                continue
            master = next((n for n in view if n.node_id == me.master_id), None)
            if master is None or master.port not in alive:
                continue  # link down is expected; failover is checked above
            try:
                with self.client(port) as r:
                    link = r.info("replication").get("master_link_status")
            except redis.RedisError as exc:
                link = f"{type(exc).__name__}: {exc}"
            if link != "up":
                problems[port].append(f"replication link to {master.port}: {link}")
        return {port: msgs for port, msgs in problems.items() if msgs}

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll ``health_problems()`` until it is empty, else raise DevstackError.

        Only *live* nodes are checked, so after ``kill_node()`` this waits for the
        failover to complete; after ``start_node()`` it waits for the node to be
        re-admitted.
        """
        deadline = time.monotonic() + timeout
        while True:
            problems = self.health_problems()
            if not problems:
                return
            if not self.alive_ports():
                raise DevstackError("wait_healthy: no Redis node is running")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        dead = [p for p in self.ports if not self.node_alive(p)]
        raise DevstackError(
            f"Redis Cluster not healthy after {timeout:.0f}s: {problems}"
            + (f" (nodes down: {dead})" if dead else "")
        )

    def wait_masters(self, count: int | None = None, timeout: float = 30.0) -> list[int]:
        """Wait until ``count`` (default: the configured number of) non-failed
        masters are all live processes; returns their ports."""
        want = self.n_masters if count is None else count
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, DevstackError):
                masters = self.masters()
                if len(masters) == want and all(self.node_alive(p) for p in masters):
                    return masters
            if time.monotonic() >= deadline:
                raise DevstackError(f"expected {want} live masters within {timeout:.0f}s")
            time.sleep(0.1)

    def flushall(self) -> None:
        """FLUSHALL on every master (replicas are read-only and follow)."""
        for port in self.masters():
            if self.node_alive(port):
                with self.client(port) as r:
                    r.flushall()

    # -- internals ---------------------------------------------------------------

    def _node(self, port: int) -> ManagedProcess:
        try:
            return self._procs[port]
        except KeyError:
            raise DevstackError(f"{port} is not a node of this cluster ({self.ports})") from None

    def _spawn(self, port: int) -> None:
        node_dir = self.node_dir(port)
        argv = [
            _find_binary("redis-server"),
            str(self._security_config),
            "--port", str(port),
            "--bind", HOST,
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", str(node_dir),
            # A cache: no persistence, evict instead of failing writes when full.
            "--save", "",
            "--appendonly", "no",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "allkeys-lru",
            "--protected-mode", "no",
            "--daemonize", "no",
            # Partitioned nodes must not serve possibly stale cache entries.
            "--cluster-allow-reads-when-down", "no",
            # Replicas must finish their first sync before they may be promoted;
            # Redis 7 would otherwise wait 5 s for more replicas to batch with.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        proc = ManagedProcess(argv, log_path=node_dir / "redis.log", name=f"redis-{port}")
        proc.start()
        self._procs[port] = proc

    @property
    def _security_config(self) -> Path:
        return self.base_dir / "security.conf"

    def _write_security_config(self) -> None:
        """The ACL file and the replication user, in files only the owner reads."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        acl_path = self.base_dir / "users.acl"
        for path, text in (
            (acl_path, acl_file(self.users)),
            (self._security_config,
             f"aclfile {acl_path}\nmasteruser {self.admin.name}\n"
             f"masterauth {self.admin.password}\n"),
        ):
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            path.write_text(text)

    def _create_cluster(self) -> None:
        argv = [
            _find_binary("redis-cli"),
            "--cluster", "create",
            *(f"{HOST}:{p}" for p in self.ports),
            "--cluster-replicas", str(self.n_replicas),
            "--cluster-yes",
            "--user", self.admin.name,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                argv,
                env={**os.environ, "REDISCLI_AUTH": self.admin.password},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.start_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevstackError(f"redis-cli --cluster create timed out: {exc.output!r}") from exc
        (self.base_dir / "cluster-create.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise DevstackError(
                f"redis-cli --cluster create failed (code {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
