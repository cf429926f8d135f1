"""Bench users: accounts with money and live sessions, made the way production makes them.

Users and accounts are inserted in bulk (one statement each); money arrives as ledger transfers
from the settlement account (devstack.seed.deposit), and sessions come from the real
SessionStore, so every token is one the services accept. Every user shares one argon2id hash
made with the services' own parameters: a login through the API costs what it costs in
production.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.auth.adapters.password_hasher import hasher_from_settings
from services.auth.adapters.session_store import SessionStore
from shared.config import Settings
from shared.pg_pool import create_pool
from shared.sessions import SessionEntrySigner

BENCH_PASSWORD = "Bench-passphrase-2026"
OPENING_BALANCE = 100_000_000  # minor units: a million EUR, far more than a run can move
_PARALLEL = 16
T = TypeVar("T")

_INSERT_USERS = text(
    "INSERT INTO users (email, name, password_hash)"
    " SELECT 'bench-' || :tag || '-' || g || '@bench.example', 'Bench user ' || g, :hash"
    " FROM generate_series(1, :n) AS g"
    " RETURNING id::text, email"
)
_INSERT_ACCOUNTS = text(
    "INSERT INTO accounts (owner_user_id, currency, name)"
    " SELECT CAST(u AS uuid), 'EUR', 'Bench account' FROM unnest(CAST(:users AS text[])) AS u"
    " RETURNING id::text, owner_user_id::text"
)


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    account_id: str
    email: str
    token: str


async def _bounded(items: list[T], limit: int,
                   work: Callable[[T], Awaitable[str]]) -> list[str]:
    slots = asyncio.Semaphore(limit)

    async def one(item: T) -> str:
        async with slots:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def create_bench_users(engine: AsyncEngine, settings: Settings,
                             count: int) -> list[BenchUser]:
    """`count` users, each with one EUR account holding OPENING_BALANCE and one session."""
    await seed.ensure_settlement_account(engine, "EUR")
    password_hash = await hasher_from_settings(settings).hash(BENCH_PASSWORD)
    tag = uuid.uuid4().hex[:8]  # several runs against one running stack never collide
    async with engine.begin() as conn:
        users = (await conn.execute(_INSERT_USERS, {"tag": tag, "hash": password_hash,
                                                    "n": count})).all()
        emails = {str(row[0]): str(row[1]) for row in users}
        accounts = (await conn.execute(_INSERT_ACCOUNTS, {"users": list(emails)})).all()
    account_of = {str(row[1]): str(row[0]) for row in accounts}
    # Keep the creation order: user 1 is the hottest rank of the Zipf choice.
    ordered = sorted(emails, key=lambda uid: int(emails[uid].split("-")[2].split("@")[0]))

    await _bounded(ordered, _PARALLEL,
                   lambda uid: seed.deposit(engine, account_of[uid], OPENING_BALANCE,
                                            description="Bench opening deposit"))
    # Sessions are made in PostgreSQL only: each user's first request confirms and caches its
    # session, signed by the stack's own key, so the bench never needs that key.
    pool = create_pool(settings, size=_PARALLEL)
    await pool.open()
    sessions = SessionStore(pool, None, SessionEntrySigner(secrets.token_hex(32)),
                            ttl_s=settings.session_ttl_s,
                            absolute_ttl_s=settings.session_absolute_ttl_s)

    async def new_token(user_id: str) -> str:
        return (await sessions.create(user_id, "127.0.0.1", "cachebank-bench")).token

    try:
        tokens = await _bounded(ordered, _PARALLEL, new_token)
    finally:
        await pool.close()
    return [BenchUser(uid, account_of[uid], emails[uid], token)
            for uid, token in zip(ordered, tokens, strict=True)]


def save_users(users: list[BenchUser], path: Path) -> None:
    path.write_text(json.dumps([asdict(u) for u in users]))


def load_users(path: Path) -> list[BenchUser]:
    return [BenchUser(**raw) for raw in json.loads(path.read_text())]
