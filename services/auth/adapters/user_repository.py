"""PostgreSQL access for users and their credentials."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.adapters.session_store import revoke_other_sessions_in
from services.auth.domain import EmailAlreadyRegistered, Registration, StoredCredentials
from shared.metrics import DB_QUERIES

# One statement, one round trip: the user and the first account commit together or not at all.
# ON CONFLICT DO NOTHING makes a duplicate email an empty result instead of an aborted
# transaction.
_REGISTER = text(
    """
    WITH new_user AS (
        INSERT INTO users (email, name, password_hash) VALUES (:email, :name, :hash)
        ON CONFLICT (email) DO NOTHING
        RETURNING id
    )
    INSERT INTO accounts (owner_user_id, currency)
    SELECT id, :currency FROM new_user
    RETURNING owner_user_id::text, id::text
    """
)
# System users (the treasury) never log in: they look exactly like an unknown email.
_BY_EMAIL = text(
    "SELECT id::text, email, password_hash FROM users WHERE email = :email AND NOT is_system"
)
_BY_ID = text(
    "SELECT id::text, email, password_hash FROM users"
    " WHERE id = CAST(:id AS uuid) AND NOT is_system"
)
_REPLACE_HASH = text(
    "UPDATE users SET password_hash = :new WHERE id = CAST(:id AS uuid) AND password_hash = :old"
)
_CHANGE_PASSWORD = text(
    "UPDATE users SET password_hash = :new, password_changed_at = now()"
    " WHERE id = CAST(:id AS uuid) AND password_hash = :old"
)


class PostgresUserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def register(self, email: str, name: str, password_hash: str,
                       currency: str) -> Registration:
        DB_QUERIES.labels("auth", "register").inc()
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                _REGISTER, {"email": email, "name": name, "hash": password_hash,
                            "currency": currency},
            )).first()
        if row is None:
            raise EmailAlreadyRegistered()
        return Registration(user_id=row[0], account_id=row[1])

    async def credentials_by_email(self, email: str) -> StoredCredentials | None:
        DB_QUERIES.labels("auth", "credentials").inc()
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_EMAIL, {"email": email})).first()
        return StoredCredentials(row[0], row[1], row[2]) if row is not None else None

    async def credentials_by_id(self, user_id: str) -> StoredCredentials | None:
        DB_QUERIES.labels("auth", "credentials").inc()
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_ID, {"id": user_id})).first()
        return StoredCredentials(row[0], row[1], row[2]) if row is not None else None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        DB_QUERIES.labels("auth", "rehash").inc()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                _REPLACE_HASH, {"id": user_id, "old": old_hash, "new": new_hash}
            )
        return bool(result.rowcount)

    async def change_password(self, user_id: str, old_hash: str, new_hash: str,
                              keep_session_id: str) -> list[str] | None:
        DB_QUERIES.labels("auth", "change_password").inc()
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                _CHANGE_PASSWORD, {"id": user_id, "old": old_hash, "new": new_hash}
            )
            if not changed.rowcount:
                return None
            return await revoke_other_sessions_in(conn, user_id, keep_session_id)
