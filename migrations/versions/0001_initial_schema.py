"""Initial schema: users, accounts, ledger, transfers, loans, sessions, outbox.

Constraints do the guarding: a customer balance never goes below zero, amounts are
positive, a transfer's ledger entries are tied to it, idempotency keys are unique per user.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email           text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
            name            text NOT NULL CHECK (length(name) <= 200),
            password_hash   text NOT NULL,
            is_system       boolean NOT NULL DEFAULT false,
            created_at      timestamptz NOT NULL DEFAULT now(),
            password_changed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT users_email_key UNIQUE (email)
        );

        -- kind 'settlement' is the bank's own cash account per currency: money enters customer
        -- accounts only by ledger entries from it, so the sum over all accounts stays 0 and the
        -- settlement balance (negative) is exactly the money issued.
        CREATE TABLE accounts (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_user_id   uuid NOT NULL REFERENCES users (id),
            name            text NOT NULL DEFAULT 'Current account',
            currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            kind            text NOT NULL DEFAULT 'customer'
                            CHECK (kind IN ('customer', 'settlement')),
            balance         bigint NOT NULL DEFAULT 0,
            version         bigint NOT NULL DEFAULT 1 CHECK (version > 0),
            status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT accounts_balance_non_negative CHECK (balance >= 0 OR kind = 'settlement')
        );
        CREATE INDEX accounts_owner_idx ON accounts (owner_user_id);
        CREATE UNIQUE INDEX accounts_one_settlement_per_currency
            ON accounts (currency) WHERE kind = 'settlement';

        CREATE TABLE transfers (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id         uuid NOT NULL REFERENCES users (id),
            from_account_id uuid NOT NULL REFERENCES accounts (id),
            to_account_id   uuid NOT NULL REFERENCES accounts (id),
            amount          bigint NOT NULL CHECK (amount > 0),
            currency        char(3) NOT NULL,
            description     text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
            status          text NOT NULL DEFAULT 'completed' CHECK (status IN ('completed')),
            idempotency_key text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT transfers_distinct_accounts CHECK (from_account_id <> to_account_id),
            CONSTRAINT transfers_idempotency_key UNIQUE (user_id, idempotency_key)
        );
        CREATE INDEX transfers_user_created_idx ON transfers (user_id, created_at DESC, id DESC);

        -- One row per ledger entry; a transfer writes two that sum to zero.
        CREATE TABLE transactions (
            id              bigserial PRIMARY KEY,
            account_id      uuid NOT NULL REFERENCES accounts (id),
            transfer_id     uuid NOT NULL REFERENCES transfers (id),
            amount          bigint NOT NULL CHECK (amount <> 0),
            balance_after   bigint NOT NULL,
            account_version bigint NOT NULL,
            counterparty_account_id uuid NOT NULL REFERENCES accounts (id),
            description     text NOT NULL DEFAULT '',
            created_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT transactions_one_entry_per_side UNIQUE (transfer_id, account_id)
        );
        CREATE INDEX transactions_account_time_idx
            ON transactions (account_id, created_at DESC, id DESC);

        CREATE TABLE loans (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            account_id      uuid NOT NULL REFERENCES accounts (id),
            user_id         uuid NOT NULL REFERENCES users (id),
            principal       bigint NOT NULL CHECK (principal > 0),
            outstanding     bigint NOT NULL CHECK (outstanding >= 0),
            currency        char(3) NOT NULL,
            interest_rate_bps integer NOT NULL CHECK (interest_rate_bps BETWEEN 0 AND 10000),
            status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'repaid')),
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX loans_user_idx ON loans (user_id);

        -- Durable copy of every session: a Redis failover or flush must not log anyone out, and a
        -- revoked session must stay revoked. Only a hash of the token's secret is stored.
        CREATE TABLE sessions (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id         uuid NOT NULL REFERENCES users (id),
            secret_hash     bytea NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_used_at    timestamptz NOT NULL DEFAULT now(),
            revoked_at      timestamptz,
            client_address  text NOT NULL DEFAULT '',
            user_agent      text NOT NULL DEFAULT ''
        );
        CREATE INDEX sessions_user_active_idx ON sessions (user_id) WHERE revoked_at IS NULL;

        -- Transactional outbox: written in the transfer's transaction, published after commit
        -- (and by the relay for anything a crash left behind).
        CREATE TABLE outbox (
            id              bigserial PRIMARY KEY,
            topic           text NOT NULL,
            partition       integer NOT NULL CHECK (partition >= 0),
            aggregate_id    uuid NOT NULL,
            payload         bytea NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            published_at    timestamptz
        );
        CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
        CREATE INDEX outbox_partition_time_idx ON outbox (partition, created_at);
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE outbox, sessions, loans, transactions, transfers, accounts, users CASCADE"
    )
