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

The functions' live text is services/transfer/adapters/sql/; the copies below are as this revision
installs them (tests/unit/test_transfer_sql.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copies of services/transfer/adapters/sql/transfer_money.sql and transfer_money_batch.sql.
TRANSFER_MONEY = r"""
CREATE OR REPLACE FUNCTION transfer_money(
    p_user_id uuid,
    p_idempotency_key text,
    p_from uuid,
    p_to uuid,
    p_amount bigint,
    p_currency text,
    p_description text,
    p_from_partition integer,
    p_to_partition integer
) RETURNS TABLE (
    outcome text,
    reason text,
    transfer_id uuid,
    created_at timestamptz,
    source_balance bigint,
    source_version bigint,
    outbox_ids bigint[],
    outbox_partitions integer[],
    outbox_payloads bytea[]
)
LANGUAGE plpgsql VOLATILE
-- Runs with its owner's rights (bank_transfer_definer, migration 0007): the transfer service's
-- role may call it but may not write the tables itself. A fixed search_path, pg_temp last, keeps a
-- caller from substituting its own tables or functions for the ones named here.
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_transfer transfers%ROWTYPE;
    v_rejection transfer_rejections%ROWTYPE;
    v_entry transactions%ROWTYPE;
    v_row accounts%ROWTYPE;
    v_src accounts%ROWTYPE;
    v_dst accounts%ROWTYPE;
    v_reason text;
    v_src_balance bigint;
    v_src_version bigint;
    v_dst_balance bigint;
    v_dst_version bigint;
    v_ids bigint[];
    v_entry_ids bigint[];
    v_payloads bytea[];
BEGIN
    -- 1. Idempotency. Each statement below takes a fresh snapshot (READ COMMITTED), so a request
    -- that waited for the lock sees what the first one committed.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_user_id::text || '/' || p_idempotency_key, 0));

    SELECT * INTO v_transfer FROM transfers t
    WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        IF (v_transfer.from_account_id, v_transfer.to_account_id, v_transfer.amount,
            v_transfer.currency::text, v_transfer.description)
           IS DISTINCT FROM (p_from, p_to, p_amount, p_currency, p_description) THEN
            RETURN QUERY SELECT 'rejected', 'idempotency_key_reused', NULL::uuid,
                NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint[], NULL::integer[],
                NULL::bytea[];
            RETURN;
        END IF;
        SELECT * INTO v_entry FROM transactions e
        WHERE e.transfer_id = v_transfer.id AND e.account_id = v_transfer.from_account_id;
        RETURN QUERY SELECT 'replayed', NULL::text, v_transfer.id, v_transfer.created_at,
            v_entry.balance_after, v_entry.account_version, NULL::bigint[], NULL::integer[],
            NULL::bytea[];
        RETURN;
    END IF;

    SELECT * INTO v_rejection FROM transfer_rejections r
    WHERE r.user_id = p_user_id AND r.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        IF (v_rejection.from_account_id, v_rejection.to_account_id, v_rejection.amount,
            v_rejection.currency, v_rejection.description)
           IS DISTINCT FROM (p_from, p_to, p_amount, p_currency, p_description) THEN
            v_reason := 'idempotency_key_reused';
        ELSE
            v_reason := v_rejection.reason;
        END IF;
        RETURN QUERY SELECT 'rejected', v_reason, NULL::uuid, NULL::timestamptz, NULL::bigint,
            NULL::bigint, NULL::bigint[], NULL::integer[], NULL::bytea[];
        RETURN;
    END IF;

    -- 2. Lock both accounts in id order (the same order for A->B and B->A).
    FOR v_row IN
        SELECT * FROM accounts a WHERE a.id IN (p_from, p_to) ORDER BY a.id FOR UPDATE
    LOOP
        IF v_row.id = p_from THEN
            v_src := v_row;
        ELSE
            v_dst := v_row;
        END IF;
    END LOOP;

    -- 3. Checks, most fundamental first. A rejection is stored with the key, nothing moves.
    v_reason := CASE
        WHEN v_src.id IS NULL OR v_src.owner_user_id <> p_user_id THEN 'source_not_found'
        WHEN v_dst.id IS NULL THEN 'destination_not_found'
        WHEN v_src.status <> 'open' THEN 'source_closed'
        WHEN v_dst.status <> 'open' THEN 'destination_closed'
        WHEN v_src.currency::text <> p_currency THEN 'source_currency_mismatch'
        WHEN v_dst.currency::text <> p_currency THEN 'destination_currency_mismatch'
        WHEN v_src.kind <> 'settlement' AND v_src.balance < p_amount THEN 'insufficient_funds'
    END;
    IF v_reason IS NOT NULL THEN
        INSERT INTO transfer_rejections (user_id, idempotency_key, from_account_id,
            to_account_id, amount, currency, description, reason)
        VALUES (p_user_id, p_idempotency_key, p_from, p_to, p_amount, p_currency, p_description,
            v_reason);
        RETURN QUERY SELECT 'rejected', v_reason, NULL::uuid, NULL::timestamptz, NULL::bigint,
            NULL::bigint, NULL::bigint[], NULL::integer[], NULL::bytea[];
        RETURN;
    END IF;

    -- 4. Move the money: balances and versions in the same statement, ledger, outbox.
    UPDATE accounts SET balance = balance - p_amount, version = version + 1
    WHERE id = p_from RETURNING balance, version INTO v_src_balance, v_src_version;
    UPDATE accounts SET balance = balance + p_amount, version = version + 1
    WHERE id = p_to RETURNING balance, version INTO v_dst_balance, v_dst_version;

    INSERT INTO transfers (user_id, from_account_id, to_account_id, amount, currency,
        description, idempotency_key)
    VALUES (p_user_id, p_from, p_to, p_amount, p_currency, p_description, p_idempotency_key)
    RETURNING * INTO v_transfer;

    -- The entry ids go into the payloads too, so they are drawn before the insert.
    v_entry_ids := ARRAY[nextval('transactions_id_seq'), nextval('transactions_id_seq')];
    INSERT INTO transactions (id, account_id, transfer_id, amount, balance_after,
        account_version, counterparty_account_id, description, created_at)
    VALUES
        (v_entry_ids[1], p_from, v_transfer.id, -p_amount, v_src_balance, v_src_version, p_to,
         p_description, v_transfer.created_at),
        (v_entry_ids[2], p_to, v_transfer.id, p_amount, v_dst_balance, v_dst_version, p_from,
         p_description, v_transfer.created_at);

    -- The ids go into the payloads, so they are drawn before the insert.
    v_ids := ARRAY[nextval('outbox_id_seq'), nextval('outbox_id_seq')];
    v_payloads := ARRAY[
        balance_changed_payload(p_from, v_src_version, v_src_balance, p_currency, v_transfer.id,
            v_ids[1], v_transfer.created_at, v_entry_ids[1], -p_amount, p_to, p_description),
        balance_changed_payload(p_to, v_dst_version, v_dst_balance, p_currency, v_transfer.id,
            v_ids[2], v_transfer.created_at, v_entry_ids[2], p_amount, p_from, p_description)];
    INSERT INTO outbox (id, topic, partition, aggregate_id, payload, created_at)
    VALUES
        (v_ids[1], 'balance_changed', p_from_partition, p_from, v_payloads[1],
         v_transfer.created_at),
        (v_ids[2], 'balance_changed', p_to_partition, p_to, v_payloads[2],
         v_transfer.created_at);

    RETURN QUERY SELECT 'created', NULL::text, v_transfer.id, v_transfer.created_at,
        v_src_balance, v_src_version, v_ids, ARRAY[p_from_partition, p_to_partition],
        v_payloads;
END
$fn$;
"""

TRANSFER_MONEY_BATCH = r"""
CREATE OR REPLACE FUNCTION transfer_money_batch(
    p_user_ids uuid[],
    p_idempotency_keys text[],
    p_froms uuid[],
    p_tos uuid[],
    p_amounts bigint[],
    p_currencies text[],
    p_descriptions text[],
    p_from_partitions integer[],
    p_to_partitions integer[]
) RETURNS TABLE (
    item integer,
    outcome text,
    reason text,
    transfer_id uuid,
    created_at timestamptz,
    source_balance bigint,
    source_version bigint,
    outbox_ids bigint[],
    outbox_partitions integer[],
    outbox_payloads bytea[]
)
LANGUAGE plpgsql VOLATILE
-- Runs with its owner's rights (bank_transfer_definer, migration 0007): the transfer service's
-- role may call it but may not write the tables itself. A fixed search_path, pg_temp last, keeps a
-- caller from substituting its own tables or functions for the ones named here.
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $fn$
#variable_conflict use_column
-- Several transfers in one transaction, so that they share one commit (one WAL flush) and one
-- round trip: each item is exactly transfer_money, in the order given, and answers exactly what
-- transfer_money would have. A hot account's transfers then pay the commit once per batch
-- instead of once each, which is what serialises them.
--
-- Lock order: every lock the items will take is taken first, in the global order transfer_money
-- follows (advisory locks of the idempotency keys, then accounts by id), so a batch cannot
-- deadlock with another batch or a single transfer. Inside, transfer_money takes the same locks
-- again, which costs nothing (a transaction holds them already).
DECLARE
    v_key bigint;
BEGIN
    FOR v_key IN
        SELECT DISTINCT hashtextextended(u::text || '/' || k, 0)
        FROM unnest(p_user_ids, p_idempotency_keys) AS x (u, k) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    PERFORM 1 FROM accounts a WHERE a.id = ANY (p_froms || p_tos) ORDER BY a.id FOR UPDATE;

    FOR i IN 1 .. coalesce(array_length(p_idempotency_keys, 1), 0) LOOP
        RETURN QUERY SELECT i, t.outcome, t.reason, t.transfer_id, t.created_at,
            t.source_balance, t.source_version, t.outbox_ids, t.outbox_partitions,
            t.outbox_payloads
        FROM transfer_money(p_user_ids[i], p_idempotency_keys[i], p_froms[i], p_tos[i],
            p_amounts[i], p_currencies[i], p_descriptions[i], p_from_partitions[i],
            p_to_partitions[i]) AS t;
    END LOOP;
END
$fn$;
"""

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

# A new owner needs CREATE on the schema at the moment it takes the functions over, never after.
_FUNCTIONS_TO_DEFINER = f"""
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
    op.execute(TRANSFER_MONEY)
    op.execute(TRANSFER_MONEY_BATCH)
    op.execute(_FUNCTIONS_TO_DEFINER)


def _revision(file_name: str) -> ModuleType:
    """An earlier revision, for the function texts it installed (read, not copied)."""
    path = Path(__file__).with_name(file_name)
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    op.execute(f"""
        ALTER FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}) OWNER TO CURRENT_USER;
        ALTER FUNCTION transfer_money_batch({_BATCH_ARGS}) OWNER TO CURRENT_USER;
        GRANT EXECUTE ON FUNCTION transfer_money({_TRANSFER_MONEY_ARGS}),
            transfer_money_batch({_BATCH_ARGS}) TO PUBLIC;
    """)
    # CREATE OR REPLACE resets SECURITY DEFINER and the search_path to the texts' own.
    op.execute(_revision("0003_ledger_entry_in_events.py").TRANSFER_MONEY)
    op.execute(_revision("0004_transfer_money_batch.py").TRANSFER_MONEY_BATCH)
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
