"""Transfers in one round trip: the `transfer_money` function, stored rejections, event payloads.

`transfer_money` does a whole transfer inside PostgreSQL, so the service makes one call per
transfer (each round trip from Python costs 100 µs or more of CPU):

1. Idempotency. A transaction-scoped advisory lock on (user, key) makes a concurrent duplicate
   wait until the first request commits; it then finds the stored outcome. A completed transfer
   is found in `transfers` by its key (kept as long as the transfer, which is at least the
   retention); a rejected one in `transfer_rejections` (purged after the retention by the relay).
   Same parameters: the stored outcome again. Other parameters: 'idempotency_key_reused'.
2. Both accounts are locked by one SELECT ... ORDER BY id FOR UPDATE, so A->B and B->A lock in the
   same order and cannot deadlock. Lock order overall: the advisory lock, then accounts by id.
3. Checks: source owned by the caller, both open, one currency, funds (settlement accounts may go
   negative: they are where money is issued). A rejection is stored with its key and moves nothing.
4. Both balances and versions change, the transfer row, two ledger entries summing to zero and
   one outbox row per account (payload: a serialized bank.v1.BalanceChanged without
   partition_sequence, which the publish script appends) are written.

The function runs as one statement; the caller uses autocommit, so there is no BEGIN/COMMIT round
trip either. The partition of each account comes from the caller (shared.events.partition_of,
CRC-32, which PostgreSQL 15 lacks).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Note for editors: alembic sends this through SQLAlchemy text(), so avoid a colon directly
# followed by a word character and the percent sign.
_UPGRADE = r"""
-- A rejected transfer request (insufficient funds, closed account, ...), stored under its
-- idempotency key so that a retry gets the same answer and cannot flip to a success later.
CREATE TABLE transfer_rejections (
    user_id         uuid NOT NULL REFERENCES users (id),
    idempotency_key text NOT NULL,
    from_account_id uuid NOT NULL,
    to_account_id   uuid NOT NULL,
    amount          bigint NOT NULL,
    currency        text NOT NULL,
    description     text NOT NULL,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX transfer_rejections_created_idx ON transfer_rejections (created_at);

-- Protobuf wire format helpers (https://protobuf.dev/programming-guides/encoding/).
-- A varint; a negative int64 is its 64-bit two's complement, ten bytes.
CREATE FUNCTION pb_varint(value bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    n bigint := value;
    encoded bytea := ''::bytea;
BEGIN
    LOOP
        IF n >= 0 AND n < 128 THEN
            RETURN encoded || set_byte('\x00'::bytea, 0, n::integer);
        END IF;
        encoded := encoded || set_byte('\x00'::bytea, 0, ((n & 127) | 128)::integer);
        -- A logical shift right by 7: shift, then clear the 7 sign-extended high bits.
        n := (n >> 7) & 144115188075855871;
    END LOOP;
END
$fn$;

-- bank.v1.BalanceChanged (protos/bank/v1/events.proto) without partition_sequence (field 15) and
-- without Money.formatted (output only: consumers format with shared.money). Byte for byte what
-- Python's SerializeToString gives (a test checks): fields in number order, zero varints left
-- out. Each field starts with its key, (field_number << 3) | wire_type, written as a constant:
-- 0a = 1 account_id, 10 = 2 version, 1a = 3 balance (Money: 08 = 1 minor_units, 12 = 2 currency),
-- 22 = 4 transfer_id, 28 = 5 outbox_id, 32 = 6 occurred_at (Timestamp: 08 seconds, 10 nanos).
-- 24 is the length of a UUID's text (36). Written inline rather than as helper calls: each
-- PL/pgSQL call costs about a microsecond, and this runs twice per transfer.
CREATE FUNCTION balance_changed_payload(
    account_id uuid, version bigint, balance bigint, currency text, transfer_id uuid,
    outbox_id bigint, occurred_at timestamptz
) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    epoch numeric := extract(epoch FROM occurred_at);
    seconds bigint := floor(epoch);
    nanos bigint := ((epoch - seconds) * 1000000000)::bigint;
    money bytea;
    stamp bytea;
BEGIN
    money := CASE WHEN balance = 0 THEN ''::bytea ELSE '\x08'::bytea || pb_varint(balance) END
        || '\x12'::bytea || pb_varint(octet_length(currency)) || convert_to(currency, 'UTF8');
    stamp := CASE WHEN seconds = 0 THEN ''::bytea ELSE '\x08'::bytea || pb_varint(seconds) END
        || CASE WHEN nanos = 0 THEN ''::bytea ELSE '\x10'::bytea || pb_varint(nanos) END;
    RETURN '\x0a24'::bytea || convert_to(account_id::text, 'UTF8')
        || CASE WHEN version = 0 THEN ''::bytea ELSE '\x10'::bytea || pb_varint(version) END
        || '\x1a'::bytea || pb_varint(octet_length(money)) || money
        || '\x2224'::bytea || convert_to(transfer_id::text, 'UTF8')
        || CASE WHEN outbox_id = 0 THEN ''::bytea ELSE '\x28'::bytea || pb_varint(outbox_id) END
        || '\x32'::bytea || pb_varint(octet_length(stamp)) || stamp;
END
$fn$;

-- The whole transfer; see the module docstring. outcome is 'created', 'replayed' (a completed
-- transfer found by its key) or 'rejected' (reason says why; a stored rejection is replayed as a
-- rejection with the same reason). Reasons: idempotency_key_reused, source_not_found (unknown,
-- or not the caller's: no existence oracle), destination_not_found, source_closed,
-- destination_closed, source_currency_mismatch, destination_currency_mismatch,
-- insufficient_funds. The outbox_* arrays are set for 'created' only (source first).
CREATE FUNCTION transfer_money(
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
LANGUAGE plpgsql VOLATILE AS $fn$
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

    INSERT INTO transactions (account_id, transfer_id, amount, balance_after, account_version,
        counterparty_account_id, description, created_at)
    VALUES
        (p_from, v_transfer.id, -p_amount, v_src_balance, v_src_version, p_to, p_description,
         v_transfer.created_at),
        (p_to, v_transfer.id, p_amount, v_dst_balance, v_dst_version, p_from, p_description,
         v_transfer.created_at);

    -- The ids go into the payloads, so they are drawn before the insert.
    v_ids := ARRAY[nextval('outbox_id_seq'), nextval('outbox_id_seq')];
    v_payloads := ARRAY[
        balance_changed_payload(p_from, v_src_version, v_src_balance, p_currency, v_transfer.id,
            v_ids[1], v_transfer.created_at),
        balance_changed_payload(p_to, v_dst_version, v_dst_balance, p_currency, v_transfer.id,
            v_ids[2], v_transfer.created_at)];
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


def upgrade() -> None:
    op.execute(_UPGRADE)


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION transfer_money(uuid, text, uuid, uuid, bigint, text, text, integer,
                                     integer);
        DROP FUNCTION balance_changed_payload(uuid, bigint, bigint, text, uuid, bigint,
                                              timestamptz);
        DROP FUNCTION pb_varint(bigint);
        DROP TABLE transfer_rejections;
        """
    )
