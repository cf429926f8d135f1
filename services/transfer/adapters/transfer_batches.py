"""Natural batching of transfers: concurrent transfers share one transaction, so one round trip
and one commit (one WAL flush) serve several of them.

A transfer that finds a lane free runs at once, alone: at low load nothing waits and nothing
changes. While every lane is busy, transfers queue; a lane that frees takes up to `max_batch` of
them into one `transfer_money_batch` call (adapters/sql/transfer_money_batch.sql). Under load the
batches grow by themselves. This matters most for a hot account: its transfers are serial up to
the end of each commit, and on a busy disk the commit's flush takes milliseconds; a batch pays
it once for all its items that touch the account.

Each item still answers exactly what transfer_money alone would. A batch that fails as a whole
for any other reason than an unreachable or overloaded database (a bug, a constraint) is rolled
back and its items run again one by one, so one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg

from shared.errors import Unavailable

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Row = Sequence[Any]


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    reply: asyncio.Future[Row]


class TransferBatches(Generic[Item]):
    def __init__(self, run_one: Callable[[Item], Awaitable[Row]],
                 run_many: Callable[[list[Item]], Awaitable[list[Row]]], *, lanes: int,
                 max_batch: int) -> None:
        """`run_one`, `run_many`: one transaction each (with their own retries); `run_many`
        answers one row per item, in order."""
        self._run_one = run_one
        self._run_many = run_many
        self._free_lanes = max(1, lanes)
        self._max_batch = max(1, max_batch)
        self._queue: list[_Waiting[Item]] = []

    async def submit(self, item: Item) -> Row:
        waiting = _Waiting(item, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        if self._free_lanes:
            self._free_lanes -= 1
            asyncio.get_running_loop().create_task(self._lane(), name="transfer-lane")
        return await waiting.reply

    async def _lane(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                await self._run(batch)
        finally:
            self._free_lanes += 1

    async def _run(self, batch: list[_Waiting[Item]]) -> None:
        if len(batch) == 1:
            await self._settle_alone(batch[0])
            return
        try:
            rows = await self._run_many([w.item for w in batch])
        except Unavailable as error:  # unreachable or overloaded: each would fail the same way
            for waiting in batch:
                _fail(waiting, error)
            return
        except (psycopg.Error, ValueError) as error:
            log.warning("a batch of %d transfers failed (%s: %s); running them one by one",
                        len(batch), type(error).__name__, error)
            for waiting in batch:
                await self._settle_alone(waiting)
            return
        for waiting, row in zip(batch, rows, strict=True):
            if not waiting.reply.done():
                waiting.reply.set_result(row)

    async def _settle_alone(self, waiting: _Waiting[Item]) -> None:
        try:
            row = await self._run_one(waiting.item)
        except Exception as error:
            _fail(waiting, error)
            return
        if not waiting.reply.done():
            waiting.reply.set_result(row)


def _fail(waiting: _Waiting[Any], error: BaseException) -> None:
    if not waiting.reply.done():
        waiting.reply.set_exception(error)
