"""One chaos run, start to end: the stack, the users, the faults one after another with the
cache checked after each, the keys settled, the checks, the report. The stack is stopped by pid
whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from chaos import invariants
from chaos.observer import CacheProbe, VersionHistory
from chaos.profiles import Profile
from chaos.report import RunResult, non_writer_staleness, write
from chaos.schedule import schedule
from chaos.stack import ChaosStack, FaultRecord
from chaos.workload import DEPOSIT, RETRY_FOR_S, Workload
from devstack import seed as seeding
from shared.config import Settings
from shared.db import create_engine
from shared.redis_pipeline import ClusterPipeline

log = logging.getLogger("chaos")

# How long the cache is watched after a fault (the check wants 2 s; the report shows more).
_CACHE_WATCH_S = 10.0
# The last word for keys still unsettled when the workload stops (the stack has recovered).
_SETTLE_S = 60.0


async def run(seed: int, profile: Profile, folder: Path) -> tuple[RunResult, Path]:
    """The report goes to `folder`, with the services' logs; the stack's data lives in a short
    temporary folder (PostgreSQL's socket path has a length limit) removed afterwards."""
    stack_dir = Path(tempfile.mkdtemp(prefix="chaos-"))
    chaos = ChaosStack(stack_dir / "stack")
    log.info("chaos run: seed %d, %s profile, results in %s", seed, profile.name, folder)
    try:
        await chaos.start()
        try:
            result = await _run(seed, profile, chaos)
        finally:
            await chaos.stop()
            logs = stack_dir / "stack" / "logs"
            if logs.exists():
                shutil.copytree(logs, folder / "logs", dirs_exist_ok=True)
    finally:
        shutil.rmtree(stack_dir, ignore_errors=True)
    return result, write(result, folder)


async def _run(seed: int, profile: Profile, chaos: ChaosStack) -> RunResult:
    stack = chaos.stack
    async with Workload(chaos.edge_url, chaos.ca_file, seed, profile.ops_per_user_s) as work:
        users = await work.register(profile.users)
        engine = create_engine(Settings(database_url=stack.pg.dsn, redis_nodes="unused"))
        try:
            for user in users:
                await seeding.deposit(engine, user.account_id, DEPOSIT)
        finally:
            await engine.dispose()
        await work.log_in_everyone()

        history = VersionHistory(stack.pg.dsn, [u.account_id for u in users])
        probe = CacheProbe(ClusterPipeline(stack.redis.startup_nodes, 0.5,
                                           credentials=stack.redis.credentials()))
        stop = asyncio.Event()
        background = [asyncio.create_task(history.run(stop), name="chaos-versions"),
                      asyncio.create_task(work.run(stop), name="chaos-workload")]
        faults: list[FaultRecord] = []
        caught_up: list[tuple[str, float | None, dict[str, tuple[int, int]]]] = []
        try:
            await asyncio.sleep(profile.warmup_s)
            started = time.monotonic()
            for planned in schedule(seed, profile):
                if time.monotonic() - started > profile.fault_phase_s:
                    break
                await asyncio.sleep(planned.gap_s)
                log.info("fault %d: %s", planned.index, planned.kind)
                record = await chaos.inject(planned)
                snapshot = await history.snapshot()
                seconds, behind = await probe.caught_up_after(snapshot, _CACHE_WATCH_S)
                faults.append(record)
                caught_up.append((f"fault {planned.index} ({planned.kind}, {record.target})",
                                  seconds, behind))
                log.info("fault %d over after %.1f s (%s); cache caught up after %s s",
                         planned.index, record.ended - record.started, record.note,
                         "-" if seconds is None else f"{seconds:.2f}")
            await asyncio.sleep(profile.cooldown_s)
        finally:
            stop.set()
            for task in background:
                with contextlib.suppress(Exception):
                    await task
            await probe.close()

        unsettled = [k for k in work.keys.values() if not k.transfer_id and not k.refused]
        await asyncio.gather(*(work.settle(k, _SETTLE_S) for k in unsettled))
        checks = [
            *await invariants.ledger_checks(stack.pg.dsn, [u.user_id for u in users],
                                            work.keys),
            invariants.writer_check(work.reads, started),
            invariants.cache_check(caught_up),
            invariants.revocation_check(work.revocation_violations,
                                        sum(op.kind == "revoked_probe" for op in work.ops)),
        ]
        notes = [f"{len(unsettled)} keys had no definitive answer within {RETRY_FOR_S:g} s"
                 " during the run and were settled afterwards by retrying under the same key."]
        return RunResult(seed, profile, started, faults, [c[1] for c in caught_up], work.ops,
                         non_writer_staleness(work.reads, history.superseded_at), checks,
                         list(chaos.restarts), notes)
