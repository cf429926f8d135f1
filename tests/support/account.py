"""Helpers shared by the account integration tests (not a test module)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from bank.v1 import account_pb2_grpc
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import AccountApp, build_account_app
from services.account.domain import (
    AccountDetails,
    AccountSnapshot,
    BalanceSnapshot,
    PagePosition,
    RecentTransactions,
    TransactionsPage,
    UserLoans,
)
from services.account.service_layer.ports import AccountReader
from services.transfer.adapters.event_publisher import RedisEventPublisher
from services.transfer.domain import OutboxEvent
from shared.cache import CacheEntry, decode_entry
from shared.config import Settings
from shared.redis_client import create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from tests.support.db_roles import as_service
from tests.support.redis_users import as_user
from tests.support.rpc import bearer
from tests.support.sessions import open_session


@dataclass(frozen=True)
class Customer:
    user_id: str
    account_id: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


async def new_customer(
    engine: AsyncEngine, unique: Callable[[str], str], *, deposit: int = 10_000,
    redis: ClusterPipeline | None = None,
) -> Customer:
    """A user with one EUR account (funded unless deposit=0) and a session token. With `redis`,
    the session is cached there too, so the interceptor's check is a Redis hit."""
    await seed.ensure_settlement_account(engine)
    user = await seed.create_user(engine, unique("acct") + "@example.com", "", "Account Test",
                                  password_hash="!")
    account = await seed.create_account(engine, user)
    if deposit:
        await seed.deposit(engine, account, deposit)
    token = await open_session(engine, user, redis)
    return Customer(user, account, token)


def account_settings(base: Settings, **overrides: Any) -> Settings:
    return as_service(dataclasses.replace(base, service_name="account", **overrides))


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, **build_options: Any
) -> AsyncIterator[tuple[AccountApp, account_pb2_grpc.AccountServiceStub]]:
    """A started account service on a free port (events subscribed, start-up catch-up done, so
    metric deltas are the test's own) and a stub on a channel."""
    app = build_account_app(settings, port=0, health_poll_s=0.2, **build_options)
    await app.start()
    try:
        if app.events is not None:
            await app.events.wait_caught_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield app, account_pb2_grpc.AccountServiceStub(channel)
    finally:
        await app.stop()


async def publish_newest_events(
    engine: AsyncEngine, settings: Settings, account_ids: list[str]
) -> None:
    """What the transfer service does after commit: publish the accounts' newest outbox rows
    through the shared publish script (which assigns the partition sequence), as the transfer
    service's Redis user on the cluster of `settings`."""
    redis = create_redis_pipeline(as_user(settings, "transfer"))
    try:
        await _publish_newest_events(engine, redis, account_ids)
    finally:
        await redis.close()


async def _publish_newest_events(
    engine: AsyncEngine, redis: ClusterPipeline, account_ids: list[str]
) -> None:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT DISTINCT ON (aggregate_id) id AS outbox_id, partition, payload"
                 " FROM outbox WHERE aggregate_id = ANY(CAST(:ids AS uuid[]))"
                 " ORDER BY aggregate_id, id DESC"),
            {"ids": account_ids},
        )).all()
    events = [OutboxEvent(r.outbox_id, r.partition, bytes(r.payload)) for r in rows]
    # Right after a failover the client may still route to the dead master: like the relay
    # would, try again (the publish script sends nothing twice).
    for _ in range(50):
        published = await RedisEventPublisher(redis).publish(events)
        if len(published) == len(account_ids):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("publishing the test's events failed")


async def cached_entry(redis: RedisCluster, key: str) -> CacheEntry | None:
    raw = await redis.get(key)
    return decode_entry(raw) if raw is not None else None


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0,
                     interval_s: float = 0.02) -> float:
    """Seconds until `check()` held; fails the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
    return loop.time() - started


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0



class CountingReader:
    """Wraps the real repository: counts database loads per method, and can hold a load after
    its read (the reader has its snapshot) until the test releases it."""

    def __init__(self, inner: AccountReader) -> None:
        self.inner = inner
        self.loads: Counter[str] = Counter()
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    async def _held(self, name: str, value: Any) -> Any:
        self.loads[name] += 1
        if self.hold is not None:
            self.read_done.set()
            await self.hold.wait()
        return value

    async def balance(self, account_id: str) -> BalanceSnapshot | None:
        return await self._held("balance", await self.inner.balance(account_id))

    async def recent_transactions(self, account_id: str, limit: int) -> RecentTransactions | None:
        return await self._held(
            "recent_transactions", await self.inner.recent_transactions(account_id, limit)
        )

    async def account(self, account_id: str) -> AccountDetails | None:
        self.loads["account"] += 1
        return await self.inner.account(account_id)

    async def accounts_of(self, user_id: str) -> list[AccountDetails]:
        self.loads["accounts_of"] += 1
        return await self.inner.accounts_of(user_id)

    async def transactions_page(
        self, account_id: str, after: PagePosition | None, limit: int
    ) -> TransactionsPage:
        self.loads["transactions_page"] += 1
        return await self.inner.transactions_page(account_id, after, limit)

    async def loans_of(self, user_id: str) -> UserLoans:
        self.loads["loans"] += 1
        return await self.inner.loans_of(user_id)

    async def snapshots_of(self, user_id: str, limit: int) -> list[AccountSnapshot]:
        return await self._held("snapshots", await self.inner.snapshots_of(user_id, limit))


def counting() -> tuple[list[CountingReader], Callable[[AccountReader], AccountReader]]:
    """A `wrap_reader` for `build_account_app` and the CountingReaders it made (one per app)."""
    made: list[CountingReader] = []

    def wrap(inner: AccountReader) -> AccountReader:
        made.append(CountingReader(inner))
        return made[-1]

    return made, wrap
