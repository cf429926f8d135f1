"""Transfers batched into one transaction (adapters/transfer_batches.py, transfer_money_batch):
each item answers exactly what transfer_money alone would (new, replayed, refused), money is
conserved, reverse pairs in concurrent batches never deadlock, and a batch one bad item breaks
is run again item by item."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.transfer.adapters.transfer_repository import PostgresTransferRepository
from services.transfer.domain import RejectionReason, TransferCommand, TransferOutcome
from shared.events import partition_of
from shared.pg_pool import PoolType
from tests.support.account import metric
from tests.support.transfer import account_state, ledger_problems, new_customer

pytestmark = pytest.mark.integration


def command(user_id: str, source: str, destination: str, amount: int,
            key: str | None = None, description: str = "") -> TransferCommand:
    return TransferCommand(user_id, key or uuid.uuid4().hex, source, destination, amount, "EUR",
                           description)


async def run(repository: PostgresTransferRepository,
              commands: list[TransferCommand]) -> list[TransferOutcome | BaseException]:
    return list(await asyncio.gather(
        *(repository.execute(c, partition_of(c.from_account_id, 16),
                             partition_of(c.to_account_id, 16)) for c in commands),
        return_exceptions=True))


async def test_each_item_of_a_batch_answers_as_a_transfer_alone(
    pg_pool: PoolType, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=10_000)
    bob = await new_customer(engine, unique, accounts=1, deposit=500)
    a1, a2, b1 = *alice.accounts, bob.accounts[0]
    # One lane: the first call runs alone, the others queue and go as batches.
    repository = PostgresTransferRepository(pg_pool, lanes=1, max_batch=16)
    batches = metric("bank_db_queries_total", service="transfer", query="transfer_money_batch")
    duplicate = command(alice.user_id, a1, b1, 700, key=unique("dup"))
    commands = [
        *(command(alice.user_id, a1, a2, 10 + n) for n in range(10)),
        *(command(bob.user_id, b1, a1, 1) for _ in range(5)),
        *([duplicate] * 5),  # five times the same request: one transfer
        command(alice.user_id, a2, b1, 999, key=duplicate.idempotency_key),  # key reused
        command(bob.user_id, b1, a2, 1_000_000),  # insufficient funds
        command(bob.user_id, a1, b1, 5),  # not bob's account
    ]
    before = await account_state(engine, [a1, a2, b1])
    outcomes = await run(repository, commands)
    assert metric("bank_db_queries_total", service="transfer",
                  query="transfer_money_batch") > batches  # batches did run
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    done = [o for o in outcomes if isinstance(o, TransferOutcome)]
    created = [o for o in done if o.transfer is not None and not o.replayed]
    assert len(created) == 10 + 5 + 1
    copies = done[15:20]
    assert len({o.transfer.transfer_id for o in copies if o.transfer}) == 1
    assert sum(1 for o in copies if o.replayed) == 4
    assert [o.rejection for o in done[20:]] == [
        RejectionReason.IDEMPOTENCY_KEY_REUSED, RejectionReason.INSUFFICIENT_FUNDS,
        RejectionReason.SOURCE_NOT_FOUND]
    # Every new transfer reports the versions it made, one after the other per account.
    versions = sorted(o.transfer.source_balance.version for o in created  # type: ignore[union-attr]
                      if o.transfer and o.transfer.from_account_id == a1)
    assert versions == sorted(set(versions))
    after = await account_state(engine, [a1, a2, b1])
    moved = sum(10 + n for n in range(10))
    assert dict((i, b) for i, b, _ in after["balances"]) == {
        a1: 10_000 - moved + 5 - 700, a2: 10_000 + moved, b1: 500 - 5 + 700}
    assert after["counts"][0] == before["counts"][0] + 16
    assert await ledger_problems(engine, [a1, a2, b1]) == []


async def test_reverse_pairs_in_concurrent_batches_never_deadlock(
    pg_pool: PoolType, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    customers = [await new_customer(engine, unique, accounts=2, deposit=50_000)
                 for _ in range(3)]
    owner = {a: c.user_id for c in customers for a in c.accounts}
    accounts = list(owner)
    # Two services' worth of lanes, every transfer in both directions at once.
    repositories = [PostgresTransferRepository(pg_pool, lanes=2, max_batch=8) for _ in range(2)]
    rng = random.Random(7)
    commands = []
    for _ in range(120):
        source, destination = rng.sample(accounts, 2)
        commands += [command(owner[source], source, destination, rng.randint(1, 50)),
                     command(owner[destination], destination, source, rng.randint(1, 50))]
    before = await account_state(engine, accounts)
    halves = await asyncio.gather(run(repositories[0], commands[0::2]),
                                  run(repositories[1], commands[1::2]))
    outcomes = [o for half in halves for o in half]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    assert all(isinstance(o, TransferOutcome) and o.transfer is not None for o in outcomes)
    after = await account_state(engine, accounts)
    assert sum(b for _, b, _ in after["balances"]) == sum(b for _, b, _ in before["balances"])
    assert await ledger_problems(engine, accounts) == []


async def test_a_batch_one_item_breaks_is_run_item_by_item(
    pg_pool: PoolType, engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    alice = await new_customer(engine, unique, accounts=2, deposit=1_000)
    a1, a2 = alice.accounts
    repository = PostgresTransferRepository(pg_pool, lanes=1, max_batch=16)
    # A user who does not exist: storing the item's rejection breaks a foreign key, an error
    # no transfer of a real caller can cause; it must not take the other items down.
    ghost = command(str(uuid.uuid4()), a1, a2, 1)
    commands = [command(alice.user_id, a1, a2, 1), command(alice.user_id, a1, a2, 2), ghost,
                command(alice.user_id, a1, a2, 3), command(alice.user_id, a2, a1, 4)]
    outcomes = await run(repository, commands)
    assert isinstance(outcomes[2], psycopg.errors.ForeignKeyViolation)
    good = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(o, TransferOutcome) and o.transfer is not None for o in good)
    state = await account_state(engine, [a1, a2])
    assert dict((i, b) for i, b, _ in state["balances"]) == {a1: 1_000 - 6 + 4, a2: 6 - 4 + 1_000}
    assert await ledger_problems(engine, [a1, a2]) == []
