"""PostgreSQL access for users and their credentials: one statement, one round trip each, on the
psycopg pool in autocommit (a statement is its own transaction)."""

from __future__ import annotations

from typing import Any

from services.auth.domain import EmailAlreadyRegistered, Registration, StoredCredentials
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType, unavailable_when_unreachable

# The user and the first account commit together or not at all (one statement). ON CONFLICT DO
# NOTHING makes a duplicate email an empty result instead of an error.
_REGISTER = (
    "WITH new_user AS ("
    "  INSERT INTO users (email, name, password_hash)"
    "  VALUES (%(email)s, %(name)s, %(hash)s)"
    "  ON CONFLICT (email) DO NOTHING RETURNING id)"
    " INSERT INTO accounts (owner_user_id, currency)"
    " SELECT id, %(currency)s FROM new_user"
    " RETURNING owner_user_id::text, id::text"
)
# System users (the treasury) never log in: they look exactly like an unknown email.
_BY_EMAIL = (
    "SELECT id::text, email, password_hash FROM users WHERE email = %(email)s AND NOT is_system"
)
# Every user counts, system ones too: their emails are taken as well.
_EMAIL_TAKEN = "SELECT EXISTS (SELECT 1 FROM users WHERE email = %(email)s)"
_BY_ID = (
    "SELECT id::text, email, password_hash FROM users"
    " WHERE id = %(id)s::uuid AND NOT is_system"
)
_REPLACE_HASH = (
    "UPDATE users SET password_hash = %(new)s"
    " WHERE id = %(id)s::uuid AND password_hash = %(old)s"
)
# The new hash and the revocation of every other session in one statement (so one
# transaction): the sessions are revoked only when the password row changed. The first column
# says whether it did; the revoked session ids follow.
_CHANGE_PASSWORD = (
    "WITH changed AS ("
    "  UPDATE users SET password_hash = %(new)s, password_changed_at = now()"
    "  WHERE id = %(id)s::uuid AND password_hash = %(old)s RETURNING id),"
    " revoked AS ("
    "  UPDATE sessions SET revoked_at = now()"
    "  WHERE user_id IN (SELECT id FROM changed) AND id <> %(keep)s::uuid"
    "  AND revoked_at IS NULL RETURNING id)"
    " SELECT EXISTS (SELECT 1 FROM changed), ARRAY(SELECT id::text FROM revoked)"
)


class PostgresUserRepository:
    def __init__(self, pool: PoolType) -> None:
        self._pool = pool

    async def _one(self, query_name: str, statement: str,
                   params: dict[str, Any]) -> tuple[Any, ...] | None:
        DB_QUERIES.labels("auth", query_name).inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                return await (await conn.execute(statement, params)).fetchone()

    async def register(self, email: str, name: str, password_hash: str,
                       currency: str) -> Registration:
        row = await self._one("register", _REGISTER, {
            "email": email, "name": name, "hash": password_hash, "currency": currency})
        if row is None:
            raise EmailAlreadyRegistered()
        return Registration(user_id=row[0], account_id=row[1])

    async def email_taken(self, email: str) -> bool:
        row = await self._one("email_taken", _EMAIL_TAKEN, {"email": email})
        return bool(row and row[0])

    async def credentials_by_email(self, email: str) -> StoredCredentials | None:
        row = await self._one("credentials", _BY_EMAIL, {"email": email})
        return StoredCredentials(row[0], row[1], row[2]) if row is not None else None

    async def credentials_by_id(self, user_id: str) -> StoredCredentials | None:
        row = await self._one("credentials", _BY_ID, {"id": user_id})
        return StoredCredentials(row[0], row[1], row[2]) if row is not None else None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        DB_QUERIES.labels("auth", "rehash").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    _REPLACE_HASH, {"id": user_id, "old": old_hash, "new": new_hash})
                return bool(cursor.rowcount)

    async def change_password(self, user_id: str, old_hash: str, new_hash: str,
                              keep_session_id: str) -> list[str] | None:
        row = await self._one("change_password", _CHANGE_PASSWORD, {
            "id": user_id, "old": old_hash, "new": new_hash, "keep": keep_session_id})
        if row is None or not row[0]:
            return None
        return [str(session_id) for session_id in row[1]]
