"""Local PostgreSQL and Redis Cluster for tests, benchmarks and `make run`.

Everything binds to 127.0.0.1 on free ports and runs as child processes owned
(by pid) by the current interpreter; see LocalPostgres and LocalRedisCluster.
"""

from devstack.ports import free_ports, free_redis_ports
from devstack.postgres import LocalPostgres, find_pg_bindir
from devstack.processes import DevstackError, ManagedProcess, wait_for_port
from devstack.redis_cluster import LocalRedisCluster

__all__ = [
    "DevstackError",
    "LocalPostgres",
    "LocalRedisCluster",
    "ManagedProcess",
    "find_pg_bindir",
    "free_ports",
    "free_redis_ports",
    "wait_for_port",
]
