"""Test doubles shared by the cache unit tests: a row type, its codec, and a database that
counts loads and can hold one between its read and its return (the stale-fill race)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.cache import CacheEntry


@dataclass(frozen=True)
class Row:
    owner: str
    version: int
    amount: int


class RowCodec:
    def to_entry(self, value: Row) -> CacheEntry:
        return CacheEntry(value.version, value.owner, str(value.amount).encode())

    def from_entry(self, entry: CacheEntry) -> Row:
        return Row(entry.owner, entry.version, int(entry.data))

    def version_of(self, value: Row) -> int:
        return value.version


class Database:
    def __init__(self, row: Row | None = None) -> None:
        self.row = row or Row("u1", 1, 100)
        self.loads = 0
        self.delay_s = 0.0
        self.gate: asyncio.Event | None = None  # holds a load between its read and its return

    async def load(self) -> Row | None:
        self.loads += 1
        row = self.row
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()
        return row
