"""transfer_money in the real PostgreSQL: the installed function is the live file, and the
outbox payloads it builds in SQL are bank.v1.BalanceChanged (protos/bank/v1/events.proto) field
for field."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from bank.v1 import account_pb2, common_pb2, events_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.transfer.adapters.transfer_repository import TRANSFER_MONEY_BATCH_SQL
from services.transfer.adapters.transfer_repository import TRANSFER_MONEY_SQL as LIVE

pytestmark = pytest.mark.integration


def body_of(definition: str) -> str:
    """What PostgreSQL keeps as the function's source: the text between the $fn$ quotes."""
    match = re.search(r"\$fn\$(.*)\$fn\$", definition, re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_installed_transfer_money_is_the_live_file(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        installed = (await conn.execute(
            text("SELECT prosrc FROM pg_proc WHERE proname = 'transfer_money'")
        )).scalars().all()
    assert installed == [body_of(LIVE.read_text())]
    async with engine.connect() as conn:
        batch = (await conn.execute(
            text("SELECT prosrc FROM pg_proc WHERE proname = 'transfer_money_batch'")
        )).scalars().all()
    assert batch == [body_of(TRANSFER_MONEY_BATCH_SQL.read_text())]


async def test_the_outbox_payloads_of_a_transfer_are_balance_changed_messages(
    engine: AsyncEngine, unique: Callable[[str], str],
) -> None:
    await seed.ensure_settlement_account(engine)
    alice = await seed.create_user(engine, unique("sql") + "@example.com", "", "A",
                                   password_hash="!")
    bob = await seed.create_user(engine, unique("sql") + "@example.com", "", "B",
                                 password_hash="!")
    source = await seed.create_account(engine, alice)
    destination = await seed.create_account(engine, bob)
    await seed.deposit(engine, source, 10_000)
    async with engine.begin() as conn:
        result = (await conn.execute(
            text("SELECT * FROM transfer_money(CAST(:u AS uuid), :k, CAST(:f AS uuid),"
                 " CAST(:t AS uuid), 2500, 'EUR', 'caf\u00e9 rent', 3, 11)"),
            {"u": alice, "k": unique("key"), "f": source, "t": destination},
        )).one()
        assert result.outcome == "created"
        outbox = (await conn.execute(
            text("SELECT id, partition, aggregate_id::text, payload FROM outbox"
                 " WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id"),
            {"ids": list(result.outbox_ids)},
        )).all()
        entries = {row.account_id: row for row in (await conn.execute(
            text("SELECT id, account_id::text, amount, balance_after, account_version,"
                 " counterparty_account_id::text FROM transactions"
                 " WHERE transfer_id = CAST(:t AS uuid)"),
            {"t": result.transfer_id},
        )).all()}
    assert [(row.partition, row.aggregate_id) for row in outbox] == [(3, source),
                                                                      (11, destination)]
    assert [bytes(row.payload) for row in outbox] == [bytes(p) for p in result.outbox_payloads]

    for row, counterparty in ((outbox[0], destination), (outbox[1], source)):
        entry = entries[row.aggregate_id]
        expected = events_pb2.BalanceChanged(
            account_id=row.aggregate_id,
            version=entry.account_version,
            balance=common_pb2.Money(minor_units=entry.balance_after, currency="EUR"),
            transfer_id=str(result.transfer_id),
            outbox_id=row.id,
            entry=account_pb2.LedgerEntry(
                entry_id=entry.id, account_id=row.aggregate_id,
                transfer_id=str(result.transfer_id),
                amount=common_pb2.Money(minor_units=entry.amount, currency="EUR"),
                balance_after=common_pb2.Money(minor_units=entry.balance_after, currency="EUR"),
                counterparty_account_id=counterparty, description="caf\u00e9 rent",
            ),
        )
        expected.occurred_at.FromDatetime(result.created_at)
        expected.entry.created_at.FromDatetime(result.created_at)
        parsed = events_pb2.BalanceChanged.FromString(bytes(row.payload))
        assert parsed == expected
        assert parsed.partition_sequence == 0  # the publish script appends it
        # Byte for byte what Python writes: field order, no stray or unknown fields.
        assert bytes(row.payload) == expected.SerializeToString()
    assert (entries[source].amount, entries[destination].amount) == (-2500, 2500)
    assert entries[source].balance_after == result.source_balance == 7_500
    assert entries[source].account_version == result.source_version
