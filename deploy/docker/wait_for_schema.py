"""Init-container step: wait until the database schema is at the Alembic head.

The migration Job (`python -m shared.migrate`) is the only writer of the schema; the services'
pods wait here instead of migrating themselves, so that replicas never race to migrate and never
start against an old schema. Exit 0 at head, 1 on timeout. Reads BANK_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import sys
import time

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from shared.config import Settings
from shared.db import to_sqlalchemy_url
from shared.migrate import ROOT


def expected_heads() -> set[str]:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


def current_heads(database_url: str) -> set[str]:
    engine = create_engine(
        to_sqlalchemy_url(database_url), poolclass=pool.NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def wait_for_head(database_url: str, timeout_s: float, poll_s: float) -> bool:
    wanted = expected_heads()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            current = current_heads(database_url)
            if current == wanted:
                print(f"schema at head {sorted(wanted)}", flush=True)
                return True
            print(f"schema at {sorted(current) or 'nothing'}, waiting for {sorted(wanted)}",
                  flush=True)
        except Exception as exc:  # the database may not accept connections yet
            print(f"database not reachable yet: {type(exc).__name__}: {exc}", flush=True)
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wait-for-schema")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between checks")
    args = parser.parse_args(argv)
    database_url = Settings.from_env(redis_nodes="unused").database_url
    return 0 if wait_for_head(database_url, args.timeout, args.poll) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
