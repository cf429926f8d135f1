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
