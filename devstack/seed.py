"""Users, accounts and money for demos and tests, written the way production writes them.

Money enters a customer account only as a transfer from the currency's settlement account, with
two ledger entries that sum to zero, version bumps and an outbox row, so the sum over all accounts
is zero from the first row on.
"""

from __future__ import annotations

import uuid

from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events import partition_of

SYSTEM_EMAIL = "treasury@bank.internal"

# A deposit is a transfer from the currency's settlement account, made by its owner (the treasury
# user) through the same transfer_money function as every other transfer
# (services/transfer/adapters/sql/transfer_money.sql).
_DEPOSIT_SQL = text(
    """
    SELECT d.outcome, d.reason, d.transfer_id::text
    FROM accounts s, transfer_money(s.owner_user_id, :key, s.id, CAST(:account_id AS uuid),
                                    :amount, :currency, :description, :from_partition,
                                    :to_partition) AS d
    WHERE s.kind = 'settlement' AND s.currency = :currency
    """
)


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


async def ensure_settlement_account(engine: AsyncEngine, currency: str = "EUR") -> str:
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(
                text(
                    "INSERT INTO users (email, name, password_hash, is_system)"
                    " VALUES (:e, 'Bank treasury', '!', true)"
                    " ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id"
                ),
                {"e": SYSTEM_EMAIL},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO accounts (owner_user_id, name, currency, kind)"
                " VALUES (:u, :n, :c, 'settlement') ON CONFLICT DO NOTHING"
            ),
            {"u": user_id, "n": f"Settlement {currency}", "c": currency},
        )
        account_id = (
            await conn.execute(
                text("SELECT id::text FROM accounts WHERE kind = 'settlement' AND currency = :c"),
                {"c": currency},
            )
        ).scalar_one()
    return str(account_id)


async def create_user(
    engine: AsyncEngine, email: str, password: str, name: str, password_hash: str | None = None
) -> str:
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(
                text(
                    "INSERT INTO users (email, name, password_hash) VALUES (:e, :n, :h)"
                    " RETURNING id::text"
                ),
                {"e": email.lower(), "n": name, "h": password_hash or hash_password(password)},
            )
        ).scalar_one()
    return str(user_id)


async def create_account(
    engine: AsyncEngine, user_id: str, currency: str = "EUR", name: str = "Current account"
) -> str:
    async with engine.begin() as conn:
        account_id = (
            await conn.execute(
                text(
                    "INSERT INTO accounts (owner_user_id, currency, name) VALUES (:u, :c, :n)"
                    " RETURNING id::text"
                ),
                {"u": user_id, "c": currency, "n": name},
            )
        ).scalar_one()
    return str(account_id)


async def deposit(
    engine: AsyncEngine,
    account_id: str,
    amount: int,
    currency: str = "EUR",
    description: str = "Deposit",
    partitions: int = 16,
) -> str:
    """Move `amount` minor units from the settlement account; returns the transfer id.

    `partitions` must match the services' `event_partitions` (the outbox rows name the partition).
    The events are left to the outbox relay to publish."""
    if amount <= 0:
        raise ValueError("deposit amount must be positive")
    async with engine.begin() as conn:
        settlement = (
            await conn.execute(
                text("SELECT id::text FROM accounts WHERE kind = 'settlement' AND currency = :c"),
                {"c": currency},
            )
        ).scalar_one_or_none()
        row = None
        if settlement is not None:
            row = (
                await conn.execute(
                    _DEPOSIT_SQL,
                    {
                        "key": f"deposit-{uuid.uuid4()}",
                        "account_id": account_id,
                        "amount": amount,
                        "currency": currency,
                        "description": description,
                        "from_partition": partition_of(settlement, partitions),
                        "to_partition": partition_of(account_id, partitions),
                    },
                )
            ).first()
        if row is None or row.outcome != "created":
            reason = "no settlement account" if row is None else row.reason
            raise ValueError(
                f"cannot deposit {amount} {currency} into {account_id}: {reason}"
            )
        transfer_id = str(row.transfer_id)
    return transfer_id
