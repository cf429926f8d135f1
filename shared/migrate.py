"""Run the Alembic migrations to head: `python -m shared.migrate` (the migration job)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def upgrade_to_head(database_url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


if __name__ == "__main__":
    settings = Settings.from_env(redis_nodes="unused")
    settings.require("database_url")  # the migrator's login, the schema's owner
    upgrade_to_head(settings.database_url)
