"""Init-container step: wait until the database schema is at this release's Alembic head, or
past it.

The migration Job (`python -m shared.migrate`) is the only writer of the schema; the services'
pods wait here instead of migrating themselves, so that replicas never race to migrate and never
start against an old schema. A schema *newer* than this release's head is accepted too: during a
rolling update the new release's Job migrates first, and the previous release's pods must still
start (restarts, scale-ups) until the rollout ends. That is safe because migrations only expand
the schema (docs/operations.md, "Schema changes: expand, then contract").

Revision ids are sequential numbers ("0001", "0002", ...; tests/unit/test_migration_history.py
keeps them linear), so a revision this release does not know and whose number is higher than its
head is a descendant of that head. Exit 0 at or past head, 1 on timeout. Reads BANK_DATABASE_URL.
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


def known_revisions() -> set[str]:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def schema_verdict(current: set[str], wanted: set[str], known: set[str]) -> str:
    """"head", "newer" (a descendant of the head: a later release migrated first) or "older"
    (wait for the migration). Only a single, numbered head can be judged newer."""
    if current == wanted:
        return "head"
    if len(current) == 1 and len(wanted) == 1:
        (revision,), (head,) = current, wanted
        if revision not in known and revision.isdigit() and head.isdigit() \
                and int(revision) > int(head):
            return "newer"
    return "older"


def wait_for_head(database_url: str, timeout_s: float, poll_s: float) -> bool:
    wanted = expected_heads()
    known = known_revisions()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            current = current_heads(database_url)
            verdict = schema_verdict(current, wanted, known)
            if verdict == "head":
                print(f"schema at head {sorted(wanted)}", flush=True)
                return True
            if verdict == "newer":
                print(f"schema at {sorted(current)}, newer than this release's head"
                      f" {sorted(wanted)}: starting (migrations only expand)", flush=True)
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
    settings = Settings.from_env(redis_nodes="unused")
    settings.require("database_url")
    return 0 if wait_for_head(settings.database_url, args.timeout, args.poll) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
