"""The retention runner (shared/retention.py): batches until one comes back short, every rule
of a pass runs even when one fails, and a `--once` pass reports failure in its exit status."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shared.config import Settings
from shared.retention import PruneRule, RetentionJob, prune, run_job, run_pass


@dataclass
class Table:
    """Rows past their retention, deleted `limit` at a time."""

    expired: int
    calls: list[int] = field(default_factory=list)

    async def prune(self, limit: int) -> int:
        self.calls.append(limit)
        deleted = min(limit, self.expired)
        self.expired -= deleted
        return deleted


async def failing(limit: int) -> int:
    raise ConnectionError("PostgreSQL is unreachable")


class NoPool:
    async def open(self, wait: bool = False) -> None: ...

    async def close(self) -> None: ...


def job(*rules: PruneRule) -> RetentionJob:
    return RetentionJob("test", NoPool(), list(rules))  # type: ignore[arg-type]


async def test_a_rule_runs_in_batches_until_one_deletes_nothing() -> None:
    table = Table(expired=25)
    assert await prune(PruneRule("t", table.prune), batch_size=10) == 25
    assert table.calls == [10, 10, 10, 10]  # 10, 10, 5, then nothing is left
    empty = Table(expired=0)
    assert await prune(PruneRule("t", empty.prune), batch_size=10) == 0
    assert empty.calls == [10]


async def test_one_failing_rule_does_not_stop_the_others() -> None:
    table = Table(expired=3)
    with pytest.raises(ConnectionError):
        await run_pass(job(PruneRule("broken", failing), PruneRule("t", table.prune)), 10)
    assert table.expired == 0


async def test_a_single_pass_reports_failure_in_its_exit_status() -> None:
    settings = Settings(database_url="postgresql://unused", redis_nodes="unused:1")
    assert await run_job(job(PruneRule("t", Table(expired=1).prune)), settings, once=True) == 0
    assert await run_job(job(PruneRule("broken", failing)), settings, once=True) == 1
