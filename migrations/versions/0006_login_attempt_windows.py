"""Failed-login counters in PostgreSQL, for while Redis cannot count them.

`login_attempt_windows` holds one fixed window per counter (an email's hash or a client address,
later also per (email, address) and per registration address): how many attempts it holds and
when it ends. The auth service's attempt counters live here (services/auth/adapters/
attempt_counters.py); rows whose window ended are deleted by the service as it goes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE login_attempt_windows (
            counter_key     text PRIMARY KEY CHECK (length(counter_key) <= 200),
            attempts        integer NOT NULL CHECK (attempts >= 0),
            window_ends_at  timestamptz NOT NULL
        );
        CREATE INDEX login_attempt_windows_ends_idx ON login_attempt_windows (window_ends_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE login_attempt_windows")
