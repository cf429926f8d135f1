"""Which Redis ACL user a test's service runs as.

The harness's settings (tests/conftest.py `settings_for`) carry the admin user, for the tests'
direct looks into Redis; a service a test starts runs as its own user, as in production, so the
suite exercises the ACL rules (devstack/redis_acl.py). The clusters' passwords are known here by
their node list, which is what a Settings carries."""

from __future__ import annotations

import dataclasses

from devstack.redis_acl import RedisUser
from devstack.redis_cluster import LocalRedisCluster
from shared.config import Settings

_USERS: dict[str, dict[str, RedisUser]] = {}


def register(cluster: LocalRedisCluster) -> None:
    _USERS[cluster.startup_nodes_csv] = cluster.users


def as_user(settings: Settings, name: str, *, missing_ok: bool = False) -> Settings:
    """`settings` with the Redis user `name` of its cluster; unchanged for an unknown cluster (a
    test pointing at a port where nothing listens) and, with `missing_ok`, for a name the cluster
    has no user for (processes without Redis, such as the retention jobs)."""
    users = _USERS.get(settings.redis_nodes)
    if users is None or (missing_ok and name not in users):
        return settings
    return dataclasses.replace(settings, **users[name].settings())
