"""The migration history stays one line of sequentially numbered revisions: the init containers'
schema wait (deploy/docker/wait_for_schema.py) judges a revision it does not know by its number,
which is only sound while every revision descends from all lower ones."""

from __future__ import annotations

import importlib.util
import sys

from alembic.config import Config
from alembic.script import ScriptDirectory

from shared.migrate import ROOT


def _load_wait_for_schema():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "wait_for_schema", ROOT / "deploy" / "docker" / "wait_for_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wait_for_schema"] = module
    spec.loader.exec_module(module)
    return module


def test_revisions_are_one_numbered_line() -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    scripts = list(ScriptDirectory.from_config(config).walk_revisions())
    ordered = sorted(scripts, key=lambda s: s.revision)
    for number, script in enumerate(ordered, start=1):
        assert script.revision == f"{number:04d}", script.path
        expected_parent = None if number == 1 else f"{number - 1:04d}"
        assert script.down_revision == expected_parent, script.path


def test_schema_verdicts() -> None:
    verdict = _load_wait_for_schema().schema_verdict
    known = {"0001", "0002", "0003"}
    assert verdict({"0003"}, {"0003"}, known) == "head"
    # The next release migrated first: this release's pods still start.
    assert verdict({"0004"}, {"0003"}, known) == "newer"
    assert verdict({"0012"}, {"0003"}, known) == "newer"
    # Not yet migrated, or nothing at all: wait.
    assert verdict({"0002"}, {"0003"}, known) == "older"
    assert verdict(set(), {"0003"}, known) == "older"
    # Not a descendant we can vouch for: wait (and time out, which fails the rollout).
    assert verdict({"abc123"}, {"0003"}, known) == "older"
    assert verdict({"0004", "0005"}, {"0003"}, known) == "older"
