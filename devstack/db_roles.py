"""Who each process is in PostgreSQL: the login user of every component, the group role it joins
(migration 0007 grants the group what the component's code runs) and the migrator that owns the
schema. deploy/k8s/base/postgres/provision-roles.sql makes the logins; compose and deploy/k8s
name the same users (tests/unit/test_db_roles.py keeps them in step)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROVISION_SQL = ROOT / "deploy" / "k8s" / "base" / "postgres" / "provision-roles.sql"

# The migration job's login and the owner of every table: CREATEROLE, never SUPERUSER.
MIGRATOR = "bank"


@dataclass(frozen=True)
class ServiceLogin:
    component: str  # devstack.components name
    login: str
    group: str

    @property
    def password_env(self) -> str:
        """The environment variable provision-roles.sql reads this login's password from."""
        return "DB_PASSWORD_" + self.component.upper().replace("-", "_")


SERVICE_LOGINS: tuple[ServiceLogin, ...] = (
    ServiceLogin("account", "svc_account", "bank_account"),
    ServiceLogin("transfer", "svc_transfer", "bank_transfer"),
    ServiceLogin("auth", "svc_auth", "bank_auth"),
    ServiceLogin("outbox-relay", "svc_outbox_relay", "bank_relay"),
    ServiceLogin("transfer-retention", "svc_transfer_retention", "bank_transfer_retention"),
    ServiceLogin("auth-retention", "svc_auth_retention", "bank_auth_retention"),
)
MIGRATOR_PASSWORD_ENV = "DB_PASSWORD_MIGRATOR"
# The metrics exporter's login: pg_monitor's statistics views, no table of the bank.
MONITOR = "bank_monitor"
MONITOR_PASSWORD_ENV = "DB_PASSWORD_MONITOR"


def login_of(component: str) -> ServiceLogin:
    for login in SERVICE_LOGINS:
        if login.component == component:
            return login
    raise KeyError(f"no PostgreSQL login for component {component!r}")
