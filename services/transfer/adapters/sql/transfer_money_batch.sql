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
LANGUAGE plpgsql VOLATILE AS $fn$
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
