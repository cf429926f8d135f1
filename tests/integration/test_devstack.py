"""devstack against the real binaries: PostgreSQL and a 6-node Redis Cluster in tmp dirs,
including a master failover, and no process left behind after stop()."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from devstack.postgres import LocalPostgres
from devstack.processes import child_pids
from devstack.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) pids in session ``sid``; each server is a session leader."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ..."; comm may contain spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_postgres_lifecycle(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg", durable=False)
    with pg:
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/cachebank"
        assert pg.sqlalchemy_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            row = conn.execute(
                "SELECT current_setting('fsync'), current_setting('max_connections'),"
                " (SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'),"
                " pg_backend_pid()"
            ).fetchone()
            assert row is not None
            fsync, max_conn, has_pgss, backend_pid = row
            assert (fsync, max_conn, has_pgss) == ("off", "300", 1)
            server_pid = pg.pid
            assert server_pid is not None
            # Backends setsid() into their own sessions, hence children, not members.
            backends = child_pids(server_pid)
            assert backend_pid in backends

        # Down: connections fail. Back: same address, same data.
        port = pg.port
        pg.stop_server()
        assert not pg.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn, connect_timeout=2).close()
        pg.start_server()
        assert pg.port == port and pg.running
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        server_pid = pg.pid
        assert server_pid is not None

    assert not pg.running
    assert not _pid_alive(server_pid)
    assert _session_members(server_pid) == []
    assert [pid for pid in backends if _pid_alive(pid)] == []
    pg.stop()  # idempotent


def _wait_replicated(cluster: LocalRedisCluster, replica: int, key: str, value: str) -> None:
    # Replication is asynchronous: make sure the replica has the key before
    # killing its master, or the failover legitimately loses it.
    deadline = time.monotonic() + 10
    with cluster.client(replica) as r:
        r.execute_command("READONLY")
        while r.get(key) != value:
            assert time.monotonic() < deadline, f"{key} never reached replica {replica}"
            time.sleep(0.05)


def test_redis_cluster_failover_and_teardown(tmp_path: Path) -> None:
    cluster = LocalRedisCluster(tmp_path / "redis", node_timeout_ms=2000)
    with cluster:
        assert len(cluster.ports) == 6
        assert cluster.startup_nodes == [("127.0.0.1", p) for p in cluster.ports]
        assert cluster.startup_nodes_csv == ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        assert cluster.urls[0] == f"redis://127.0.0.1:{cluster.ports[0]}"
        masters = cluster.masters()
        assert len(masters) == 3 and len(cluster.replicas()) == 3
        first_pids = dict(cluster.pids)

        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes],
            decode_responses=True, username=cluster.admin.name, password=cluster.admin.password,
        )
        try:
            key = "devstack:failover"
            assert client.set(key, "v1")
            assert client.get(key) == "v1"

            old_master = cluster.master_for_key(key)
            replicas = cluster.replicas_of(old_master)
            assert replicas
            for replica in replicas:
                _wait_replicated(cluster, replica, key, "v1")

            cluster.kill_node(old_master)
            assert not cluster.node_alive(old_master)
            new_masters = cluster.wait_masters(timeout=15)  # raises if no failover by then
            assert old_master not in new_masters
            assert cluster.master_for_key(key) in replicas
            cluster.wait_healthy(15)

            # The same client object follows the failover (it refreshes its slot map).
            assert client.get(key) == "v1"

            # The old master comes back as a replica of its replacement.
            cluster.start_node(old_master)
            cluster.wait_healthy(30)
            assert old_master in cluster.replicas()
            assert old_master in cluster.replicas_of(cluster.master_for_key(key))

            cluster.flushall()
            assert client.get(key) is None
        finally:
            client.close()

        # Every node down, then back (the "Redis unavailable" scenarios).
        cluster.stop_all_nodes()
        assert cluster.alive_ports() == []
        with (
            cluster.client(cluster.ports[0], timeout=0.5) as r,
            pytest.raises(redis.ConnectionError),
        ):
            r.ping()
        cluster.start_all_nodes()
        assert len(cluster.masters()) == 3
        last_pids = dict(cluster.pids)

    all_pids = {pid for pid in [*first_pids.values(), *last_pids.values()] if pid is not None}
    assert len(all_pids) >= 12
    assert [pid for pid in all_pids if _pid_alive(pid)] == []
    assert cluster.alive_ports() == []
    cluster.stop()  # idempotent
