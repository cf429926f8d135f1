"""Retention: an index that finds confirmed outbox rows by when they were confirmed.

The transfer service's retention job deletes outbox rows confirmed (published_at) more than
`outbox_retention_s` ago, in batches (services/transfer/adapters/retention_store.py). A partial
index on published_at holds confirmed rows only, so a new row (unconfirmed) costs the transfer
nothing more; its entry is written by the batched confirmation, off the request path.
Rejections already have transfer_rejections_created_idx (0002); sessions are pruned by a scan
(services/auth/adapters/session_retention.py says why).

Built CONCURRENTLY (outside the migration's transaction): the outbox of a running system is
large, and a plain CREATE INDEX would block every transfer's insert until it finished.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published_at_idx"
            " ON outbox (published_at) WHERE published_at IS NOT NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS outbox_published_at_idx")
