"""Demo users and money for `make run`, written through ledger entries (devstack.seed)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed

DEMO_PASSWORD = "demo-password-2026"


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    user_id: str
    account_id: str


async def load_demo_data(engine: AsyncEngine) -> list[DemoUser]:
    await seed.ensure_settlement_account(engine, "EUR")
    users: list[DemoUser] = []
    for email, name, opening in (
        ("alice@example.com", "Alice Example", 250_000),
        ("bob@example.com", "Bob Example", 100_000),
    ):
        user_id = await seed.create_user(engine, email, DEMO_PASSWORD, name)
        account_id = await seed.create_account(engine, user_id, "EUR")
        await seed.deposit(engine, account_id, opening, description="Opening deposit")
        users.append(DemoUser(email, name, user_id, account_id))
    alice = users[0]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO loans (account_id, user_id, principal, outstanding, currency,"
                " interest_rate_bps) VALUES (:a, :u, 1500000, 1234500, 'EUR', 450)"
            ),
            {"a": alice.account_id, "u": alice.user_id},
        )
    return users
