"""Machine credentials: identities of callers that act for no user (a treasury job, a report),
each with the scopes it may use. Only the secret's SHA-256 is stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE machine_credentials (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
            secret_hash  bytea NOT NULL,
            scopes       text[] NOT NULL CHECK (cardinality(scopes) > 0),
            created_at   timestamptz NOT NULL DEFAULT now(),
            revoked_at   timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE machine_credentials")
