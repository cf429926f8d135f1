"""Least privilege in PostgreSQL (migration 0007, deploy/k8s/base/postgres/provision-roles.sql):
each component's login may run what its code runs and is refused the rest; money moves only through
transfer_money, which runs with the rights of a role nobody logs in as; only the migrator changes
the schema. Connects to the harness' PostgreSQL as each login, with its password."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import errors
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.db_roles import MIGRATOR, SERVICE_LOGINS
from devstack.postgres import LocalPostgres
from shared.config import Settings
from shared.migrate import ROOT
from tests.support.account import account_settings
from tests.support.auth import auth_settings
from tests.support.transfer import new_customer

pytestmark = pytest.mark.integration

COMPONENTS = [login.component for login in SERVICE_LOGINS]


@pytest.fixture
def connect(postgres: LocalPostgres) -> Iterator[Callable[[str], psycopg.Connection]]:
    """An autocommit connection as a component's login (or as the migrator)."""
    opened: list[psycopg.Connection] = []

    def open_as(component: str) -> psycopg.Connection:
        url = postgres.owner_dsn if component == MIGRATOR else postgres.service_dsn(component)
        conn = psycopg.connect(url, autocommit=True)
        opened.append(conn)
        return conn

    yield open_as
    for conn in opened:
        conn.close()


def refused(conn: psycopg.Connection, statement: str, params: object = None) -> bool:
    try:
        conn.execute(statement, params)  # type: ignore[arg-type]
    except errors.InsufficientPrivilege:
        return True
    return False


# (component, statement): each must be refused for lack of privilege. The ids are seeded below
# only where the statement would otherwise have a row to act on; a refusal comes before that.
_ANY = "00000000-0000-0000-0000-000000000001"
REFUSED = [
    ("account", "UPDATE accounts SET balance = balance + 1"),
    ("account", "INSERT INTO transactions (account_id, transfer_id, amount, balance_after,"
                f" account_version, counterparty_account_id) VALUES ('{_ANY}', '{_ANY}', 1, 1,"
                f" 1, '{_ANY}')"),
    ("account", "DELETE FROM outbox"),
    ("account", "SELECT password_hash FROM users"),
    ("account", "SELECT secret_hash FROM machine_credentials"),
    ("account", "UPDATE sessions SET revoked_at = NULL"),
    ("account", f"SELECT * FROM transfer_money('{_ANY}', 'k', '{_ANY}', '{_ANY}', 1, 'EUR', '',"
                " 0, 0)"),
    ("transfer", "UPDATE accounts SET balance = balance + 1"),
    ("transfer", "INSERT INTO transfers (user_id, from_account_id, to_account_id, amount,"
                 f" currency) VALUES ('{_ANY}', '{_ANY}', '{_ANY}', 1, 'EUR')"),
    ("transfer", "DELETE FROM transactions"),
    ("transfer", "INSERT INTO outbox (topic, partition, aggregate_id, payload)"
                 f" VALUES ('balance_changed', 0, '{_ANY}', '')"),
    ("transfer", "SELECT password_hash FROM users"),
    ("transfer", "INSERT INTO machine_credentials (name, secret_hash, scopes)"
                 " VALUES ('x', '', '{treasury:deposit}')"),
    ("auth", "UPDATE accounts SET balance = balance + 1"),
    ("auth", "INSERT INTO accounts (owner_user_id, currency, balance)"
             f" VALUES ('{_ANY}', 'EUR', 5)"),
    ("auth", f"INSERT INTO accounts (owner_user_id, currency, kind) VALUES ('{_ANY}', 'EUR',"
             " 'settlement')"),
    ("auth", "SELECT balance FROM accounts"),
    ("auth", "SELECT * FROM transfers"),
    ("auth", "SELECT * FROM transactions"),
    ("auth", "SELECT * FROM outbox"),
    ("auth", "UPDATE users SET is_system = true"),
    ("outbox-relay", "SELECT * FROM accounts"),
    ("outbox-relay", "SELECT * FROM sessions"),
    ("outbox-relay", "DELETE FROM outbox"),
    ("outbox-relay", "UPDATE outbox SET payload = ''"),
    ("transfer-retention", "DELETE FROM sessions"),
    ("transfer-retention", "DELETE FROM transfers"),
    ("transfer-retention", "UPDATE outbox SET published_at = NULL"),
    ("auth-retention", "DELETE FROM outbox"),
    ("auth-retention", "DELETE FROM users"),
    ("auth-retention", "UPDATE sessions SET revoked_at = NULL"),
]


@pytest.mark.parametrize(("component", "statement"), REFUSED,
                         ids=[f"{c}:{s[:40]}" for c, s in REFUSED])
def test_each_login_is_refused_what_its_code_does_not_run(
        connect: Callable[[str], psycopg.Connection], component: str, statement: str) -> None:
    assert refused(connect(component), statement)


@pytest.mark.parametrize("component", COMPONENTS)
def test_nobody_but_the_migrator_changes_the_schema(
        connect: Callable[[str], psycopg.Connection], component: str) -> None:
    conn = connect(component)
    assert refused(conn, "CREATE TABLE intruder (id int)")
    assert refused(conn, "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_non_negative")
    assert refused(conn, "CREATE OR REPLACE FUNCTION transfer_money_batch() RETURNS int"
                         " LANGUAGE sql AS 'SELECT 1'")
    assert refused(conn, "TRUNCATE outbox")
    role = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
                        " WHERE rolname = current_user").fetchone()
    assert role == (False, False, False)


def test_the_migrator_owns_the_schema_without_being_superuser(
        connect: Callable[[str], psycopg.Connection]) -> None:
    conn = connect(MIGRATOR)
    role = conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles"
                        " WHERE rolname = current_user").fetchone()
    assert role == (False, True)
    owners = {row[0] for row in conn.execute(
        "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {MIGRATOR}
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE TABLE {name} (id int)")
    conn.execute(f"DROP TABLE {name}")


def test_the_transfer_functions_run_as_a_role_nobody_logs_in_as(
        connect: Callable[[str], psycopg.Connection]) -> None:
    rows = connect(MIGRATOR).execute(
        "SELECT p.proname, r.rolname, r.rolcanlogin, p.prosecdef, p.proconfig,"
        " has_function_privilege('public', p.oid, 'EXECUTE')"
        " FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
        " WHERE p.proname IN ('transfer_money', 'transfer_money_batch') ORDER BY 1").fetchall()
    assert [row[0] for row in rows] == ["transfer_money", "transfer_money_batch"]
    for _name, owner, can_login, security_definer, config, public_may_execute in rows:
        assert owner == "bank_transfer_definer" and not can_login
        assert security_definer
        assert config == ["search_path=pg_catalog, public, pg_temp"]
        assert not public_may_execute


async def test_the_transfer_login_moves_money_only_through_transfer_money(
        connect: Callable[[str], psycopg.Connection], engine: AsyncEngine,
        unique: Callable[[str], str]) -> None:
    payer = await new_customer(engine, unique, deposit=1_000)
    payee = await new_customer(engine, unique)
    source, destination = payer.accounts[0], payee.accounts[0]
    conn = connect("transfer")
    assert refused(conn, "UPDATE accounts SET balance = 0 WHERE id = %s", (source,))
    row = conn.execute(
        "SELECT outcome, source_balance FROM transfer_money(%s, %s, %s, %s, 250, 'EUR', 'roles',"
        " 0, 1)", (payer.user_id, unique("key"), source, destination)).fetchone()
    assert row == ("created", 750)
    balances = dict(conn.execute("SELECT id::text, balance FROM accounts WHERE id = ANY(%s)",
                                 ([source, destination],)).fetchall())
    assert balances == {source: 750, destination: 250}


def test_auth_opens_an_account_only_with_the_defaults(
        connect: Callable[[str], psycopg.Connection], unique: Callable[[str], str]) -> None:
    conn = connect("auth")
    row = conn.execute(
        "WITH u AS (INSERT INTO users (email, name, password_hash) VALUES (%s, 'Roles', '!')"
        " RETURNING id) INSERT INTO accounts (owner_user_id, currency) SELECT id, 'EUR' FROM u"
        " RETURNING id::text", (unique("roles") + "@example.com",)).fetchone()
    assert row is not None
    opened = connect("account").execute(
        "SELECT balance, kind, version FROM accounts WHERE id = %s", (row[0],)).fetchone()
    assert opened == (0, "customer", 1)


def test_a_login_needs_its_password(postgres: LocalPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://svc_account@{postgres.host}:{postgres.port}/"
                        f"{postgres.dbname}").close()


def test_the_harness_builds_services_with_their_logins(make_settings: Callable[..., Settings],
                                                        base_settings: Settings) -> None:
    assert "//svc_auth:" in auth_settings(base_settings).database_url
    assert "//svc_account:" in account_settings(base_settings).database_url
    assert "//svc_transfer:" in make_settings(service_name="transfer").database_url
    assert "//postgres@" in base_settings.database_url  # the tests' own seeding


def test_the_migration_goes_down_and_up_again_as_the_migrator(
        private_postgres: LocalPostgres) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = private_postgres.owner_dsn
    command.downgrade(config, "0006")
    with psycopg.connect(private_postgres.owner_dsn, autocommit=True) as conn:
        attributes = conn.execute(
            "SELECT bool_or(prosecdef), bool_or(proconfig IS NOT NULL) FROM pg_proc"
            " WHERE proname IN ('transfer_money', 'transfer_money_batch')").fetchone()
        assert attributes == (False, False)  # neither SECURITY DEFINER nor a search_path
        assert conn.execute("SELECT has_table_privilege('bank_account', 'accounts', 'SELECT')"
                            ).fetchone() == (False,)
    command.upgrade(config, "head")
    with psycopg.connect(private_postgres.service_dsn("account"), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM accounts")
