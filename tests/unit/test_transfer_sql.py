"""The transfer rules' live SQL (services/transfer/adapters/sql/transfer_money.sql) against the
migrations that install it and the domain's rejection reasons."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from services.transfer.adapters.transfer_repository import TRANSFER_MONEY_SQL as LIVE
from services.transfer.domain import RejectionReason

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations" / "versions"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def migrations_in_order() -> list[ModuleType]:
    """Every revision, oldest first, following down_revision from the root."""
    modules = [_load(path) for path in sorted(MIGRATIONS.glob("*.py"))]
    by_parent = {module.down_revision: module for module in modules}
    assert len(by_parent) == len(modules), "the revisions branch"
    chain, parent = [], None
    while parent in by_parent:
        chain.append(by_parent[parent])
        parent = chain[-1].revision
    assert len(chain) == len(modules), "a revision is not on the chain"
    return chain


def defines(module: ModuleType, function: str) -> bool:
    """Whether the revision (re)creates the function; an ALTER FUNCTION keeps its text."""
    texts = [value for value in vars(module).values() if isinstance(value, str)]
    return any(re.search(rf"CREATE (OR REPLACE )?FUNCTION {function}\(", text) for text in texts)


def test_the_newest_migration_that_defines_transfer_money_carries_the_live_file() -> None:
    changing = [m for m in migrations_in_order() if defines(m, "transfer_money")]
    newest = changing[-1]
    frozen = getattr(newest, "TRANSFER_MONEY", None)
    assert frozen is not None, (
        f"migration {newest.revision} defines transfer_money: name its frozen copy of "
        "transfer_money.sql TRANSFER_MONEY"
    )
    assert frozen.strip() == LIVE.read_text().strip(), (
        f"transfer_money.sql differs from migration {newest.revision}'s copy: a change to the "
        "function needs a new migration carrying the new text"
    )


def reasons_in_sql() -> list[str]:
    """Every reason the function can return, in the order the SQL checks them."""
    sql = LIVE.read_text()
    found = re.findall(r"(?:v_reason := |'rejected', |THEN )'([a-z_]+)'", sql)
    return list(dict.fromkeys(found))


def test_the_rejection_reasons_are_the_ones_the_sql_returns() -> None:
    assert reasons_in_sql() == [reason.value for reason in RejectionReason]


def test_the_newest_migration_that_defines_transfer_money_batch_carries_the_live_file() -> None:
    from services.transfer.adapters.transfer_repository import TRANSFER_MONEY_BATCH_SQL

    changing = [m for m in migrations_in_order() if defines(m, "transfer_money_batch")]
    frozen = getattr(changing[-1], "TRANSFER_MONEY_BATCH", None)
    assert frozen is not None and frozen.strip() == TRANSFER_MONEY_BATCH_SQL.read_text().strip()
