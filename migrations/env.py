"""Alembic environment: the URL comes from the caller (shared.migrate) or the settings object."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from shared.config import Settings
from shared.db import to_sqlalchemy_url

config = context.config
url = config.attributes.get("database_url") or Settings.from_env(redis_nodes="unused").database_url

engine = create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
