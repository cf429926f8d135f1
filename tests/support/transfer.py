"""Helpers for the transfer integration tests: customers with real sessions, a running transfer
service, ledger invariants checked in SQL, and a sharded pub/sub listener for the events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from bank.v1 import common_pb2, events_pb2, transfer_pb2, transfer_pb2_grpc
from google.protobuf.message import DecodeError
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.transfer.bootstrap import TransferApp, build_transfer_app
from shared.config import Settings
from shared.events import channel_name, decode_balance_changed
from shared.redis_client import create_redis_cluster
from tests.support.redis_users import as_user
from tests.support.rpc import bearer
from tests.support.sessions import open_session


@dataclass(frozen=True)
class Customer:
    user_id: str
    token: str
    accounts: list[str]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


async def new_customer(
    engine: AsyncEngine, unique: Callable[[str], str], *, accounts: int = 1,
    deposit: int = 0, currency: str = "EUR",
) -> Customer:
    if deposit:
        await seed.ensure_settlement_account(engine, currency)
    user = await seed.create_user(engine, unique("xfer") + "@example.com", "-", "Transfer Test",
                                  password_hash="!")
    ids = [await seed.create_account(engine, user, currency) for _ in range(accounts)]
    for account in ids:
        if deposit:
            await seed.deposit(engine, account, deposit, currency)
    token = await open_session(engine, user)
    return Customer(user, token, ids)


def transfer_request(source: str, destination: str, amount: int, key: str,
                     currency: str = "EUR", description: str = "") -> Any:
    return transfer_pb2.CreateTransferRequest(
        from_account_id=source, to_account_id=destination,
        amount=common_pb2.Money(minor_units=amount, currency=currency),
        idempotency_key=key, description=description,
    )


@contextlib.asynccontextmanager
async def running_transfer_app(
    settings: Settings, **kwargs: Any
) -> AsyncIterator[tuple[TransferApp, transfer_pb2_grpc.TransferServiceStub]]:
    app = build_transfer_app(as_user(dataclasses.replace(settings, service_name="transfer"),
                                     "transfer"), port=0, **kwargs)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield app, transfer_pb2_grpc.TransferServiceStub(channel)
    finally:
        await app.stop()


async def account_state(engine: AsyncEngine, accounts: Sequence[str]) -> dict[str, Any]:
    """Everything a transfer would change for these accounts (stored rejections excluded: they
    are the idempotency record of a failed request, by design)."""
    async with engine.connect() as conn:
        balances = (await conn.execute(
            text("SELECT id::text, balance, version FROM accounts"
                 " WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id"),
            {"ids": list(accounts)},
        )).all()
        counts = (await conn.execute(
            text("SELECT"
                 " (SELECT count(*) FROM transfers"
                 "   WHERE from_account_id = ANY(CAST(:ids AS uuid[]))"
                 "   OR to_account_id = ANY(CAST(:ids AS uuid[]))),"
                 " (SELECT count(*) FROM transactions"
                 "   WHERE account_id = ANY(CAST(:ids AS uuid[]))),"
                 " (SELECT count(*) FROM outbox WHERE aggregate_id = ANY(CAST(:ids AS uuid[])))"),
            {"ids": list(accounts)},
        )).one()
    return {"balances": [tuple(r) for r in balances], "counts": tuple(counts)}


async def ledger_problems(engine: AsyncEngine, accounts: Sequence[str]) -> list[str]:
    """Double-entry invariants for these accounts; an empty list means all hold."""
    ids = {"ids": list(accounts)}
    problems: list[str] = []
    async with engine.connect() as conn:
        for row in (await conn.execute(text(
            "SELECT a.id::text, a.balance, coalesce(sum(e.amount), 0) FROM accounts a"
            " LEFT JOIN transactions e ON e.account_id = a.id"
            " WHERE a.id = ANY(CAST(:ids AS uuid[])) GROUP BY a.id, a.balance"
            " HAVING a.balance <> coalesce(sum(e.amount), 0) OR a.balance < 0"), ids)).all():
            problems.append(f"account {row[0]}: balance {row[1]}, sum of entries {row[2]}")
        for row in (await conn.execute(text(
            "SELECT t.id::text, count(e.id), coalesce(sum(e.amount), 0) FROM transfers t"
            " LEFT JOIN transactions e ON e.transfer_id = t.id"
            " WHERE t.from_account_id = ANY(CAST(:ids AS uuid[]))"
            "    OR t.to_account_id = ANY(CAST(:ids AS uuid[]))"
            " GROUP BY t.id HAVING count(e.id) <> 2 OR sum(e.amount) <> 0"), ids)).all():
            problems.append(f"transfer {row[0]}: {row[1]} entries summing to {row[2]}")
        for row in (await conn.execute(text(
            "SELECT e.account_id::text, e.account_version, count(*) FROM transactions e"
            " WHERE e.account_id = ANY(CAST(:ids AS uuid[]))"
            " GROUP BY 1, 2 HAVING count(*) > 1"), ids)).all():
            problems.append(f"account {row[0]}: version {row[1]} used by {row[2]} entries")
    return problems


class EventListener:
    """Sharded pub/sub subscriber on every partition channel, collecting BalanceChanged."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.events: list[events_pb2.BalanceChanged] = []
        self._redis: RedisCluster | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventListener:
        # Pub/sub reads block: a longer socket timeout than the services' cache client.
        self._redis = create_redis_cluster(dataclasses.replace(self._settings,
                                                               redis_timeout_ms=5000))
        await self._redis.initialize()  # the slot map, which ssubscribe needs
        pubsub = self._redis.pubsub()
        await pubsub.ssubscribe(*(channel_name(p) for p in range(self._settings.event_partitions)))

        async def pump() -> None:
            try:
                while True:
                    # Non-blocking: a read cut short by its timeout can lose the message it was
                    # in the middle of (seen as a missing event under load).
                    message = await pubsub.get_sharded_message(ignore_subscribe_messages=True,
                                                               timeout=0.0)
                    if message is not None and message.get("type") in ("smessage", b"smessage"):
                        # Other tests share the channels and publish broken messages on purpose.
                        with contextlib.suppress(DecodeError):
                            self.events.append(decode_balance_changed(message["data"]))
                    elif message is None:
                        await asyncio.sleep(0.01)
            finally:
                await pubsub.aclose()

        self._task = asyncio.create_task(pump())
        await asyncio.sleep(0.2)  # subscriptions settle
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            if self._redis is not None:
                await self._redis.aclose()

    def for_transfer(self, transfer_id: str) -> list[events_pb2.BalanceChanged]:
        return [e for e in self.events if e.transfer_id == transfer_id]

    async def wait_for(self, transfer_id: str, count: int, timeout: float) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.for_transfer(transfer_id)) < count:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        return self.for_transfer(transfer_id)
