"""The retention jobs' runner. Each service says what it prunes (its `PruneRule`s, with the
ages from Settings); this runs them once (`--once`: a Kubernetes CronJob) or every
`retention_interval_s` (`make run`, compose), and never stops on a failed pass in that mode.

A rule deletes at most `retention_batch_size` rows per statement and is called again until a
batch deletes nothing: each DELETE is its own short transaction, so pruning never holds many
row locks at once or keeps autovacuum waiting behind one long transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shared.config import Settings
from shared.logging import configure_logging
from shared.metrics import RETENTION_DELETED, start_metrics_server
from shared.pg_pool import PoolType

log = logging.getLogger(__name__)

# Bounds one pass (batches x batch size rows per rule); the next pass goes on.
MAX_BATCHES_PER_PASS = 1_000
# A job deletes one batch at a time: one connection.
RETENTION_POOL_SIZE = 1


@dataclass(frozen=True)
class PruneRule:
    name: str
    # Deletes up to `limit` rows that are past their retention; returns how many it deleted
    # (a batch may come back short while rows remain, e.g. spread over partitions).
    prune: Callable[[int], Awaitable[int]]


@dataclass
class RetentionJob:
    """A service's rules and the pool they delete through (one connection)."""

    name: str
    pool: PoolType
    rules: Sequence[PruneRule]

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()


async def prune(rule: PruneRule, batch_size: int, job: str = "",
                max_batches: int = MAX_BATCHES_PER_PASS) -> int:
    """Run one rule in batches until one deletes nothing; returns the rows deleted."""
    deleted = 0
    counter = RETENTION_DELETED.labels(job, rule.name)
    for _ in range(max_batches):
        batch = await rule.prune(batch_size)
        deleted += batch
        counter.inc(batch)
        if batch == 0:
            break
    return deleted


async def run_pass(job: RetentionJob, batch_size: int) -> dict[str, int]:
    """Every rule of the job once; a failing rule does not keep the others from running."""
    deleted: dict[str, int] = {}
    failed: list[BaseException] = []
    for rule in job.rules:
        try:
            deleted[rule.name] = await prune(rule, batch_size, job.name)
        except Exception as err:
            log.exception("retention rule %s failed", rule.name)
            failed.append(err)
    log.info("retention pass done", extra={"fields": {"deleted": deleted}})
    if failed:
        raise failed[0]
    return deleted


async def run_job(job: RetentionJob, settings: Settings, *, once: bool) -> int:
    """Returns the process exit status: 1 when a `--once` pass failed."""
    await job.open()
    try:
        while True:
            try:
                await run_pass(job, settings.retention_batch_size)
            except Exception:
                if once:
                    return 1
            if once:
                return 0
            await asyncio.sleep(settings.retention_interval_s)
    finally:
        await job.close()


def retention_main(service_name: str, module: str, build: Callable[[Settings], RetentionJob],
                   argv: Sequence[str] | None = None) -> int:
    """The `__main__` of a service's retention job (`python -m <module> [--once]`)."""
    import uvloop

    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--once", action="store_true",
                        help="one pass, then exit (a CronJob); default: every "
                             "BANK_RETENTION_INTERVAL_S seconds")
    args = parser.parse_args(argv)
    settings = Settings.from_env(service_name=service_name)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if not args.once:
        start_metrics_server(settings.metrics_port, settings.metrics_host)
    return uvloop.run(run_job(build(settings), settings, once=args.once))
