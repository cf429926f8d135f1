"""Least privilege: one NOLOGIN group role per service and job, each granted what its code runs,
and the transfer functions as SECURITY DEFINER owned by a role nobody logs in as.

- bank_account: read accounts, transactions, loans and the outbox (catch-up); confirm sessions.
- bank_transfer: call transfer_money and transfer_money_batch; read transfers, ledger entries,
  accounts (the treasury's parties) and machine credentials; mark outbox rows published;
  confirm sessions.
- bank_auth: users and sessions; open an account at registration (owner and currency only: the
  balance, kind and version take their defaults); login_attempt_windows; manage machine
  credentials (the operators' tool, services/auth/machine_credentials.py, runs as auth).
- bank_relay: claim, read and mark outbox rows.
- bank_transfer_retention: delete confirmed outbox rows and stored rejections.
- bank_auth_retention: delete ended sessions.
- bank_transfer_definer: owns transfer_money and transfer_money_batch, which write accounts,
  transfers, ledger entries, rejections and outbox rows with its rights; nobody logs in as it.

"Confirm sessions" is shared/session_confirmation.py, which the request gate of every gRPC service
runs: reading a session's id, owner, hash and times and bumping last_used_at, nothing else. Every
role reads alembic_version (the pods' wait-for-schema). The migrator (the connection running this)
owns every table and stays the only role that may change the schema.

Login users are not made here: they carry passwords, which belong to the deployment (devstack's
provisioning for `make run` and the tests, compose's `postgres-roles` step, CloudNativePG managed
roles in Kubernetes; devstack/db_roles.py). Role names are global to a PostgreSQL cluster, so a role
that exists already (made by that provisioning) is reused. Creating one needs CREATEROLE: the
migrator has it, never SUPERUSER.

The functions keep the text revisions 0003 and 0004 installed (services/transfer/adapters/sql/ is
its live copy); this revision only gives them their owner, SECURITY DEFINER and a fixed
search_path, with ALTER FUNCTION. A later revision that replaces one must state both attributes
again: CREATE OR REPLACE FUNCTION resets them to the text's own (tests/integration/
test_postgres_roles.py checks the installed functions carry them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

GROUP_ROLES = ("bank_account", "bank_transfer", "bank_auth", "bank_relay",
               "bank_transfer_retention", "bank_auth_retention", "bank_transfer_definer")

# Every table _GRANTS names (the downgrade revokes on exactly these: the schema also holds
# objects of extensions, which the migrator does not own).
_GRANTED_TABLES = ("accounts, transactions, loans, outbox, sessions, users, transfers,"
                   " transfer_rejections, machine_credentials, login_attempt_windows,"
                   " alembic_version")
_TRANSFER_MONEY_ARGS = "uuid, text, uuid, uuid, bigint, text, text, integer, integer"
_BATCH_ARGS = "uuid[], text[], uuid[], uuid[], bigint[], text[], text[], integer[], integer[]"

# Columns of sessions the request gate's confirmation reads (its WHERE and RETURNING).
_CONFIRM_SESSIONS = ("GRANT SELECT (id, user_id, secret_hash, revoked_at, last_used_at,"
                     " created_at), UPDATE (last_used_at) ON sessions TO {role}")

_GRANTS = f"""
-- Nobody but the owner may create objects in the schema the SECURITY DEFINER functions search
-- (PostgreSQL 15 already has it so for new databases; older clusters carried over may not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO {", ".join(GROUP_ROLES)};
GRANT SELECT ON alembic_version TO {", ".join(GROUP_ROLES)};

-- account
GRANT SELECT ON accounts, transactions, loans, outbox TO bank_account;
{_CONFIRM_SESSIONS.format(role="bank_account")};

-- transfer: money moves only through the functions below.
GRANT SELECT ON accounts, transfers, transactions TO bank_transfer;
GRANT SELECT (id, name, secret_hash, scopes, revoked_at) ON machine_credentials TO bank_transfer;
GRANT SELECT (id, published_at), UPDATE (published_at) ON outbox TO bank_transfer;
{_CONFIRM_SESSIONS.format(role="bank_transfer")};

-- auth
GRANT SELECT, INSERT (email, name, password_hash), UPDATE (password_hash, password_changed_at)
    ON users TO bank_auth;
GRANT SELECT (id, owner_user_id), INSERT (owner_user_id, currency) ON accounts TO bank_auth;
GRANT SELECT, INSERT (user_id, secret_hash, client_address, user_agent),
    UPDATE (revoked_at, last_used_at) ON sessions TO bank_auth;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_attempt_windows TO bank_auth;
GRANT SELECT, INSERT (name, secret_hash, scopes), UPDATE (revoked_at)
    ON machine_credentials TO bank_auth;

-- outbox relay
GRANT SELECT, UPDATE (published_at) ON outbox TO bank_relay;

-- retention jobs
GRANT SELECT, DELETE ON outbox, transfer_rejections TO bank_transfer_retention;
GRANT SELECT, DELETE ON sessions TO bank_auth_retention;

-- the transfer functions' owner
GRANT SELECT, INSERT, UPDATE ON accounts, transfers, transactions, transfer_rejections, outbox
    TO bank_transfer_definer;
GRANT USAGE ON SEQUENCE transactions_id_seq, outbox_id_seq TO bank_transfer_definer;
"""

# The functions run with their owner's rights: the transfer service's role may call them but may
# not write the tables itself. A fixed search_path, pg_temp last, keeps a caller from substituting
# its own tables or functions for the ones they name. A new owner needs CREATE on the schema at
# the moment it takes the functions over, never after.
_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp"
_FUNCTIONS_TO_DEFINER = f"""
ALTER FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) {_DEFINER};
ALTER FUNCTION transfer_money_batch({_BATCH_ARGS}) {_DEFINER};
GRANT CREATE ON SCHEMA public TO bank_transfer_definer;
ALTER FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) OWNER TO bank_transfer_definer;
ALTER FUNCTION transfer_money_batch({_BATCH_ARGS}) OWNER TO bank_transfer_definer;
REVOKE CREATE ON SCHEMA public FROM bank_transfer_definer;
REVOKE EXECUTE ON FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION transfer_money_batch({_BATCH_ARGS}) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}),
    transfer_money_batch({_BATCH_ARGS}) TO bank_transfer;
"""


def _create_role_unless_present(role: str) -> str:
    # CREATE ROLE has no IF NOT EXISTS. Role names reach SQL only from GROUP_ROLES above.
    return (f"DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" CREATE ROLE {role} NOLOGIN; END IF; END $do$")


def upgrade() -> None:
    for role in GROUP_ROLES:
        op.execute(_create_role_unless_present(role))
    # ALTER ... OWNER TO needs membership in the new owner; the migrator then also stays able to
    # replace the functions in later revisions. (CREATEROLE allows granting it to oneself.)
    op.execute("GRANT bank_transfer_definer TO CURRENT_USER")
    op.execute(_GRANTS)
    op.execute(_FUNCTIONS_TO_DEFINER)


def downgrade() -> None:
    op.execute(f"""
        ALTER FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) OWNER TO CURRENT_USER;
        ALTER FUNCTION transfer_money_batch({_BATCH_ARGS}) OWNER TO CURRENT_USER;
        ALTER FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) SECURITY INVOKER RESET search_path;
        ALTER FUNCTION transfer_money_batch({_BATCH_ARGS}) SECURITY INVOKER RESET search_path;
        GRANT EXECUTE ON FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}),
            transfer_money_batch({_BATCH_ARGS}) TO PUBLIC;
    """)
    # The roles stay: they are global to the cluster and login users provisioned outside the
    # migrations are members. Their privileges in this database go (revoked by the owner who
    # granted them: DROP OWNED would need membership of each role).
    roles = ", ".join(GROUP_ROLES)
    op.execute(f"""
        REVOKE ALL ON {_GRANTED_TABLES} FROM {roles};
        REVOKE ALL ON SEQUENCE transactions_id_seq, outbox_id_seq FROM {roles};
        REVOKE ALL ON FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}),
            transfer_money_batch({_BATCH_ARGS}) FROM {roles};
        REVOKE ALL ON SCHEMA public FROM {roles};
    """)
