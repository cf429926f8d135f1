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

SYSTEM_EMAIL = "treasury@bank.internal"

_DEPOSIT_SQL = text(
    """
    WITH settle AS (
        UPDATE accounts SET balance = balance - :amount, version = version + 1
        WHERE kind = 'settlement' AND currency = :currency
        RETURNING id, balance, version
    ), cust AS (
        UPDATE accounts SET balance = balance + :amount, version = version + 1
        WHERE id = CAST(:account_id AS uuid) AND kind = 'customer' AND currency = :currency
          AND status = 'open'
        RETURNING id, owner_user_id, balance, version
    ), tr AS (
        INSERT INTO transfers (id, user_id, from_account_id, to_account_id, amount, currency,
                               description)
        SELECT CAST(:transfer_id AS uuid), s.owner_user_id, settle.id, cust.id, :amount,
               :currency, :description
        FROM settle, cust JOIN accounts s ON s.kind = 'settlement' AND s.currency = :currency
        RETURNING id
    )
    INSERT INTO transactions (account_id, transfer_id, amount, balance_after, account_version,
                              counterparty_account_id, description)
    SELECT settle.id, tr.id, -CAST(:amount AS bigint), settle.balance, settle.version, cust.id,
           :description FROM settle, cust, tr
    UNION ALL
    SELECT cust.id, tr.id, CAST(:amount AS bigint), cust.balance, cust.version, settle.id,
           :description FROM settle, cust, tr
    RETURNING account_id
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
) -> str:
    """Move `amount` minor units from the settlement account; returns the transfer id."""
    if amount <= 0:
        raise ValueError("deposit amount must be positive")
    transfer_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                _DEPOSIT_SQL,
                {
                    "amount": amount,
                    "currency": currency,
                    "account_id": account_id,
                    "transfer_id": transfer_id,
                    "description": description,
                },
            )
        ).all()
        if len(rows) != 2:
            raise ValueError(
                f"cannot deposit into {account_id}: no open {currency} account or "
                f"no {currency} settlement account"
            )
    return transfer_id
