"""The services under test connect to the harness' PostgreSQL as their own logins (migration 0007,
devstack/db_roles.py), as they do in every deployment; the tests' own seeding and inspection keep
the superuser's URL. A service's settings are the harness' settings with its service_name: this
swaps in that component's login, found by the server's address."""

from __future__ import annotations

import dataclasses

from psycopg.conninfo import conninfo_to_dict

from devstack.db_roles import SERVICE_LOGINS
from devstack.postgres import LocalPostgres
from shared.config import Settings
from tests.support.redis_users import as_user

_COMPONENTS = {login.component for login in SERVICE_LOGINS}
# Names some tests give a component's process.
_ALIASES = {"relay": "outbox-relay"}
# Redis users by component, where the names differ (devstack/redis_acl.py).
_REDIS_USERS = {"outbox-relay": "relay"}
# The harness' servers by host:port (tests/conftest.py registers each it starts).
_SERVERS: dict[str, LocalPostgres] = {}


def _address(url: str) -> str:
    parts = conninfo_to_dict(url)
    return f"{parts.get('host')}:{parts.get('port')}"


def register(pg: LocalPostgres) -> None:
    _SERVERS[f"{pg.host}:{pg.port}"] = pg


def as_service(settings: Settings, component: str | None = None) -> Settings:
    """`settings` connecting as `component`'s PostgreSQL login and Redis user (default: its
    service_name), as in every deployment; unchanged when that names no component, or the URLs
    no server of the harness."""
    name = component or _ALIASES.get(settings.service_name, settings.service_name)
    settings = as_user(settings, _REDIS_USERS.get(name, name), missing_ok=True)
    if name not in _COMPONENTS or not settings.database_url:
        return settings
    pg = _SERVERS.get(_address(settings.database_url))
    if pg is None:
        return settings
    return dataclasses.replace(settings, database_url=pg.service_dsn(name))


def service_settings(settings: Settings, service_name: str) -> Settings:
    """The settings of one service under test: its name, and its login."""
    return as_service(dataclasses.replace(settings, service_name=service_name))
