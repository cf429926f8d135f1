"""Money is conserved under concurrency: many workers, reverse pairs, a hot account. Real gRPC,
real PostgreSQL; no client may see a deadlock (or any error other than insufficient funds)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from bank.v1 import transfer_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from tests.support.transfer import (
    Customer,
    ledger_problems,
    new_customer,
    running_transfer_app,
    transfer_request,
)

pytestmark = pytest.mark.integration

WORKERS = 8


@pytest.fixture(scope="module")
async def stub(base_settings: Settings) -> AsyncIterator[transfer_pb2_grpc.TransferServiceStub]:
    async with running_transfer_app(base_settings) as (_, transfer_stub):
        yield transfer_stub


@dataclass
class Tally:
    ok: int = 0
    insufficient: int = 0
    unexpected: list[str] = field(default_factory=list)
    # Net money per account according to the replies the clients got.
    net: Counter[str] = field(default_factory=Counter)
    touches: Counter[str] = field(default_factory=Counter)


async def run_transfers(
    stub: transfer_pb2_grpc.TransferServiceStub,
    owners: dict[str, Customer],
    pick: Callable[[random.Random, list[tuple[str, str]]], tuple[str, str]],
    total: int,
    unique: Callable[[str], str],
) -> Tally:
    tally = Tally()
    remaining = iter(range(total))
    recent: list[tuple[str, str]] = []

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in remaining:
            source, destination = pick(rng, recent)
            recent.append((source, destination))
            del recent[:-20]
            amount = rng.randint(1, 3_000)
            try:
                await stub.CreateTransfer(
                    transfer_request(source, destination, amount, unique("k")),
                    metadata=owners[source].metadata, timeout=30,
                )
            except grpc.aio.AioRpcError as error:
                if (error.code() == grpc.StatusCode.FAILED_PRECONDITION
                        and "insufficient funds" in (error.details() or "")):
                    tally.insufficient += 1
                else:
                    tally.unexpected.append(f"{error.code().name}: {error.details()}")
                continue
            tally.ok += 1
            tally.net[source] -= amount
            tally.net[destination] += amount
            tally.touches[source] += 1
            tally.touches[destination] += 1

    await asyncio.gather(*(worker(n) for n in range(WORKERS)))
    return tally


async def balances(engine: AsyncEngine, accounts: list[str]) -> dict[str, tuple[int, int]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT id::text, balance, version FROM accounts"
                 " WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": accounts},
        )).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


async def check_conservation(engine: AsyncEngine, accounts: list[str],
                             before: dict[str, tuple[int, int]], tally: Tally) -> None:
    after = await balances(engine, accounts)
    assert tally.unexpected == [], Counter(tally.unexpected).most_common(5)
    assert sum(b for b, _ in after.values()) == sum(b for b, _ in before.values())
    assert all(b >= 0 for b, _ in after.values())
    for account in accounts:
        # Every reply the clients saw is in the database, and nothing else moved.
        assert after[account][0] == before[account][0] + tally.net[account]
        assert after[account][1] == before[account][1] + tally.touches[account]
    assert await ledger_problems(engine, accounts) == []


async def test_conservation_with_reverse_pairs(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    customers = [await new_customer(engine, unique, accounts=2, deposit=20_000)
                 for _ in range(5)]
    owners = {a: c for c in customers for a in c.accounts}
    accounts = list(owners)

    def pick(rng: random.Random, recent: list[tuple[str, str]]) -> tuple[str, str]:
        # About 30% are the reverse of a transfer that is probably still in flight: A->B, B->A.
        if recent and rng.random() < 0.3:
            source, destination = rng.choice(recent)
            return destination, source
        return tuple(rng.sample(accounts, 2))  # type: ignore[return-value]

    before = await balances(engine, accounts)
    tally = await run_transfers(stub, owners, pick, 2_000, unique)
    assert tally.ok > 1_000, tally
    await check_conservation(engine, accounts, before, tally)


async def test_hot_account(
    stub: transfer_pb2_grpc.TransferServiceStub, engine: AsyncEngine,
    unique: Callable[[str], str],
) -> None:
    hot_owner = await new_customer(engine, unique, accounts=1, deposit=1_000_000)
    others = [await new_customer(engine, unique, accounts=1, deposit=20_000) for _ in range(8)]
    hot = hot_owner.accounts[0]
    owners = {a: c for c in (hot_owner, *others) for a in c.accounts}
    cold = [c.accounts[0] for c in others]

    def pick(rng: random.Random, recent: list[tuple[str, str]]) -> tuple[str, str]:
        if rng.random() < 0.7:  # 70% touch the hot account, in both directions
            other = rng.choice(cold)
            return (hot, other) if rng.random() < 0.5 else (other, hot)
        return tuple(rng.sample(cold, 2))  # type: ignore[return-value]

    accounts = [hot, *cold]
    before = await balances(engine, accounts)
    tally = await run_transfers(stub, owners, pick, 1_500, unique)
    assert tally.touches[hot] > 900
    await check_conservation(engine, accounts, before, tally)
