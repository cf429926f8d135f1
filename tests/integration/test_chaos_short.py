"""`make chaos`'s short profile (about two minutes): a seeded run against a whole stack of its own
on free ports, every kind of fault once or more; it fails when an invariant fails, and the report
says which and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.profiles import SHORT
from chaos.run import run

pytestmark = pytest.mark.integration

SEED = 12


@pytest.mark.timeout(900)
async def test_the_short_chaos_profile_keeps_every_invariant(tmp_path: Path) -> None:
    result, report = await run(SEED, SHORT, tmp_path / "chaos")
    assert len(result.faults) >= 7  # every kind of fault at least once
    assert result.passed, report.read_text()
