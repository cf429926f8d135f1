"""The Redis Cluster scripts compose and Kubernetes run (deploy/k8s/base/redis), run for real
against six local redis-server nodes: start.sh starts a node with the deployment's redis.conf and
settings, cluster-init.sh makes 3 masters + 3 replicas and applies maxmemory, allkeys-lru and the
node timeout, and after every node comes back with new addresses, start.sh finds the peers again
by their announced host names."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devstack.ports import HOST, free_redis_ports
from devstack.processes import ManagedProcess, wait_for_port
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.integration

REDIS_DIR = ROOT / "deploy" / "k8s" / "base" / "redis"
SETTINGS = dict(
    line.split("=", 1) for line in (REDIS_DIR / "redis-settings.env").read_text().splitlines()
    if line and not line.startswith("#")
)


class Nodes:
    def __init__(self, base: Path) -> None:
        self.ports = free_redis_ports(6)
        self.procs: dict[int, ManagedProcess] = {}
        for port in self.ports:
            folder = base / f"node-{port}"
            folder.mkdir()
            env = {**os.environ, **SETTINGS, "REDIS_HOSTNAME": "localhost",
                   "REDIS_CONF": str(REDIS_DIR / "redis.conf")}
            # The deployment's start script; only the address differs (one machine, six ports).
            argv = ["sh", str(REDIS_DIR / "start.sh"), "--port", str(port), "--bind", HOST]
            self.procs[port] = ManagedProcess(argv, log_path=folder / "redis.log",
                                              name=f"redis-{port}", cwd=folder, env=env)

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()
        for port, proc in self.procs.items():
            wait_for_port(HOST, port, timeout=30, process=proc)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=10)

    def nodes_conf(self, port: int) -> Path:
        return self.procs[port].log_path.parent / "nodes.conf"

    def cluster_info(self, port: int) -> dict[str, str]:
        with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as r:
            text = str(r.execute_command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def problems(self) -> list[str]:
        """Why the cluster is not healthy: cluster_state ok alone is not enough, a node keeps
        that state for a node timeout before it notices that it reaches no peer."""
        found: list[str] = []
        for port in self.ports:
            if self.cluster_info(port).get("cluster_state") != "ok":
                found.append(f"{port}: cluster_state not ok")
            with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as r:
                lines = str(r.execute_command("CLUSTER", "NODES")).splitlines()
            for line in lines:
                fields = line.split()
                if "myself" in fields[2]:
                    continue
                if fields[7] != "connected" or "fail" in fields[2]:
                    found.append(f"{port} sees {fields[1]} {fields[2]} {fields[7]}")
        return found

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while problems := self.problems():
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster not healthy: {problems}")
            time.sleep(0.2)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    group = Nodes(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()


def cluster_init(nodes: Nodes) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SETTINGS, "REDIS_WAIT_S": "30",
           "REDIS_NODES": " ".join(f"{HOST}:{p}" for p in nodes.ports)}
    return subprocess.run(["sh", str(REDIS_DIR / "cluster-init.sh")], env=env,
                          capture_output=True, text=True, timeout=90, check=False)


def test_cluster_init_creates_the_cluster_once_and_sets_memory_policy(nodes: Nodes) -> None:
    first = cluster_init(nodes)
    assert first.returncode == 0, first.stdout + first.stderr
    nodes.wait_healthy()
    info = nodes.cluster_info(nodes.ports[0])
    assert (info["cluster_known_nodes"], info["cluster_size"]) == ("6", "3")
    for port in nodes.ports:
        with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as r:
            config = r.config_get("maxmemory*") | r.config_get("cluster-node-timeout")
        assert config["maxmemory-policy"] == SETTINGS["REDIS_MAXMEMORY_POLICY"] == "allkeys-lru"
        assert config["cluster-node-timeout"] == SETTINGS["REDIS_NODE_TIMEOUT_MS"]
        assert int(config["maxmemory"]) == 256 * 1024 * 1024
    # A second run (a re-applied Job, a restarted compose project) changes nothing.
    again = cluster_init(nodes)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "the cluster exists already" in again.stdout


def test_nodes_find_each_other_after_all_addresses_changed(nodes: Nodes) -> None:
    assert cluster_init(nodes).returncode == 0
    nodes.wait_healthy()
    nodes.stop()
    # Every pod restarted with a new IP: nodes.conf now names addresses nobody listens on.
    for port in nodes.ports:
        conf = nodes.nodes_conf(port)
        stale = re.sub(r" 127\.0\.0\.1:", " 127.0.0.2:", conf.read_text())
        assert stale != conf.read_text()
        conf.write_text(stale)
    nodes.start()
    nodes.wait_healthy()
    for port in nodes.ports:
        text = nodes.nodes_conf(port).read_text()
        assert "127.0.0.2:" not in text, f"node {port} kept a stale address"


def script(name: str, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(REDIS_DIR / name), str(port)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def roles(nodes: Nodes) -> dict[int, str]:
    out = {}
    for port in nodes.ports:
        with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as r:
            out[port] = str(r.execute_command("ROLE")[0])
    return out


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_readiness_means_a_whole_cluster_and_a_linked_replica(nodes: Nodes) -> None:
    alone = script("ready.sh", nodes.ports[0])
    assert alone.returncode == 1 and "cluster_state" in alone.stderr
    assert cluster_init(nodes).returncode == 0
    nodes.wait_healthy()
    wait_until(lambda: all(script("ready.sh", p).returncode == 0 for p in nodes.ports),
               "every node ready")
    # A replica goes: its master has no linked replica left and stops being ready.
    replica = next(p for p, role in roles(nodes).items() if role == "slave")
    with redis.Redis(host=HOST, port=replica, decode_responses=True) as r:
        master_port = int(r.info("replication")["master_port"])
    nodes.procs[replica].stop(timeout=10)
    wait_until(lambda: script("ready.sh", master_port).returncode == 1, "the master unready")
    assert "without an online replica" in script("ready.sh", master_port).stderr


def test_pre_stop_hands_a_master_over_to_its_replica(nodes: Nodes) -> None:
    assert cluster_init(nodes).returncode == 0
    nodes.wait_healthy()
    wait_until(lambda: all(script("ready.sh", p).returncode == 0 for p in nodes.ports),
               "every node ready")
    before = roles(nodes)
    master = next(p for p, role in before.items() if role == "master")
    result = script("pre-stop.sh", master)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "now a replica" in result.stdout
    after = roles(nodes)
    assert after[master] == "slave"
    assert sorted(after.values()).count("master") == 3
    # A replica's preStop does nothing.
    quiet = script("pre-stop.sh", master)
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_cluster_init_re_adds_a_node_that_lost_its_volume(nodes: Nodes) -> None:
    assert cluster_init(nodes).returncode == 0
    nodes.wait_healthy()
    lost = next(p for p, role in roles(nodes).items() if role == "slave")
    with redis.Redis(host=HOST, port=lost, decode_responses=True) as r:
        old_id = str(r.execute_command("CLUSTER", "MYID"))
    proc = nodes.procs[lost]
    proc.stop(timeout=10)
    folder = proc.log_path.parent
    for item in folder.iterdir():  # the volume is gone: a new, empty node on the same host
        if item != proc.log_path:
            subprocess.run(["rm", "-rf", str(item)], check=True)
    witness = next(p for p in nodes.ports if p != lost)

    def flagged_failed() -> bool:
        with redis.Redis(host=HOST, port=witness, decode_responses=True) as r:
            text = str(r.execute_command("CLUSTER", "NODES"))
        return any(line.startswith(old_id) and "fail" in line.split()[2]
                   for line in text.splitlines())

    wait_until(flagged_failed, "the cluster to flag the lost node")
    proc.start()
    wait_for_port(HOST, lost, timeout=30, process=proc)
    again = cluster_init(nodes)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "adding it as a replica" in again.stdout and old_id in again.stdout
    nodes.wait_healthy()
    assert roles(nodes)[lost] == "slave"
    info = nodes.cluster_info(witness)
    assert (info["cluster_known_nodes"], info["cluster_size"]) == ("6", "3")


async def test_the_deployments_redis_runs_with_acl_users_and_tls_only(tmp_path: Path) -> None:
    """What compose and Kubernetes run: the ACL file and the admin user's password from a
    mounted Secret, TLS on the client port, replication and the bus, the plaintext port closed.
    cluster-init.sh and ready.sh work through redis-cli.sh; a service user reaches its keys over
    TLS; plaintext and the default user are refused."""
    import asyncio

    import hiredis

    from devstack.redis_acl import acl_file, new_users
    from shared.config import Settings
    from shared.redis_client import create_redis_pipeline

    certs = tmp_path / "tls"
    subprocess.run(["sh", str(ROOT / "deploy" / "compose" / "make-internal-certs.sh"),
                    str(certs)], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"})
    users = new_users()
    secrets = tmp_path / "acl"
    secrets.mkdir()
    (secrets / "users.acl").write_text(acl_file(users))
    (secrets / "redis-admin.password").write_text(users["admin"].password)
    security = {"REDIS_ACL_FILE": str(secrets / "users.acl"),
                "REDIS_ADMIN_PASSWORD_FILE": str(secrets / "redis-admin.password"),
                "REDIS_TLS_DIR": str(certs / "redis")}
    ports = free_redis_ports(6)
    procs = []
    for port in ports:
        folder = tmp_path / f"node-{port}"
        folder.mkdir()
        env = {**os.environ, **SETTINGS, **security, "REDIS_HOSTNAME": "localhost",
               "REDIS_PORT": str(port), "REDIS_CONF": str(REDIS_DIR / "redis.conf")}
        procs.append(ManagedProcess(["sh", str(REDIS_DIR / "start.sh"), "--bind", HOST],
                                    log_path=folder / "redis.log", name=f"redis-{port}",
                                    cwd=folder, env=env))
    try:
        for proc, port in zip(procs, ports, strict=True):
            proc.start()
            wait_for_port(HOST, port, timeout=30, process=proc)
        init = subprocess.run(
            ["sh", str(REDIS_DIR / "cluster-init.sh")],
            env={**os.environ, **SETTINGS, **security, "REDIS_WAIT_S": "60",
                 "REDIS_NODES": " ".join(f"{HOST}:{p}" for p in ports)},
            capture_output=True, text=True, timeout=120, check=False)
        assert init.returncode == 0, init.stdout + init.stderr
        wait_until(lambda: all(script("ready.sh", p, **security).returncode == 0
                               for p in ports), "every node ready over TLS")
        assert "password" not in (tmp_path / f"node-{ports[0]}" / "redis.log").read_text()

        settings = Settings(database_url="", redis_nodes=f"{HOST}:{ports[0]}",
                            redis_timeout_ms=2000, redis_tls=True,
                            redis_tls_ca_file=str(certs / "ca.crt"),
                            **users["account"].settings())
        pipeline = create_redis_pipeline(settings)
        try:
            key = "account:{acl-tls}:balance"
            assert await pipeline.execute(key, "SET", key, "1") == b"OK"
            assert await pipeline.execute(key, "GET", key) == b"1"
            try:
                await pipeline.execute("events:seq:{1}", "INCR", "events:seq:{1}")
            except hiredis.ReplyError as refused:
                assert str(refused).startswith("NOPERM")
            else:
                raise AssertionError("the account user wrote an event sequence")
        finally:
            await pipeline.close()
        # Plaintext on the TLS port gets no answer it could use; the default user is off.
        with pytest.raises(redis.RedisError), \
                redis.Redis(host=HOST, port=ports[0], socket_timeout=2) as plain:
            plain.ping()
        with pytest.raises(redis.AuthenticationError), redis.Redis(
                host=HOST, port=ports[0], socket_timeout=2, ssl=True,
                ssl_ca_certs=str(certs / "ca.crt")) as anonymous:
            anonymous.ping()
        await asyncio.sleep(0)
    finally:
        for proc in procs:
            proc.stop(timeout=10)
