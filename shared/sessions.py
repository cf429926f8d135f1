"""Sessions: the token format, the Redis entry and the durable PostgreSQL row.

A token is "<user_id>.<session_id>.<secret>". The ids are not secret; they let any component
(the gateway's one-round-trip Lua check, the service interceptor) find the Redis key
`session:{<user_id>}:<session_id>` without a lookup table, and the user's hash tag puts the
session and the rate-limit counter in one slot. The secret carries 256 random bits; only its
SHA-256 is stored, and it is compared in constant time.

Redis value: b"<sha256 hex>|<epoch seconds of the last PostgreSQL touch>", TTL = idle timeout,
slid by GETEX on each use. A revoked session's key holds the tombstone b"revoked" so that a
reader racing the revocation cannot refill it from an older PostgreSQL read (refills use NX).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth_context import Caller
from shared.errors import Unauthenticated

REVOKED = b"revoked"
# PostgreSQL's last_used_at is refreshed at most this often; a Redis-less fallback may therefore
# end a session up to this much earlier than its sliding TTL (documented trade-off: one UPDATE per
# request would put the session check back on the database).
PG_TOUCH_INTERVAL_S = 60
_MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class ParsedToken:
    user_id: str
    session_id: str
    secret: str


@dataclass(frozen=True)
class NewSession:
    token: str
    user_id: str
    session_id: str
    expires_at: float


def session_key(user_id: str, session_id: str) -> str:
    return f"session:{{{user_id}}}:{session_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> ParsedToken:
    """Reject malformed tokens before any I/O, with one message that reveals nothing."""
    invalid = Unauthenticated("session token is invalid or expired")
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    parts = token.split(".")
    if len(parts) != 3 or not parts[2]:
        raise invalid
    try:
        user_id = str(uuid.UUID(parts[0]))
        session_id = str(uuid.UUID(parts[1]))
    except ValueError:
        raise invalid from None
    if user_id != parts[0] or session_id != parts[1]:
        raise invalid  # only the canonical form, so one session has exactly one token spelling
    return ParsedToken(user_id, session_id, parts[2])


def secret_matches(stored_hash_hex: str | bytes, secret: str) -> bool:
    stored = stored_hash_hex.decode() if isinstance(stored_hash_hex, bytes) else stored_hash_hex
    return hmac.compare_digest(stored, hash_secret(secret))


class SessionStore:
    """Create, validate and revoke sessions in Redis (fast path) and PostgreSQL (durable)."""

    def __init__(self, engine: AsyncEngine, redis: RedisCluster | None, ttl_s: int) -> None:
        self._engine = engine
        self._redis = redis
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def create(self, user_id: str, client_address: str = "", user_agent: str = "") -> NewSession:
        secret = secrets.token_urlsafe(32)
        secret_hash = hash_secret(secret)
        async with self._engine.begin() as conn:
            row = await conn.execute(
                text(
                    "INSERT INTO sessions (user_id, secret_hash, client_address, user_agent)"
                    " VALUES (:u, :h, :a, :ua) RETURNING id"
                ),
                {"u": user_id, "h": bytes.fromhex(secret_hash), "a": client_address[:100],
                 "ua": user_agent[:300]},
            )
            session_id = str(row.scalar_one())
        await self._redis_set(user_id, session_id, secret_hash, nx=False)
        return NewSession(f"{user_id}.{session_id}.{secret}", user_id, session_id,
                          time.time() + self._ttl_s)

    async def authenticate(self, token: str) -> Caller:
        parsed = parse_token(token)
        key = session_key(parsed.user_id, parsed.session_id)
        if self._redis is not None:
            try:
                value = await self._redis.getex(key, ex=self._ttl_s)
            except Exception:
                value = None  # Redis down or slow: PostgreSQL decides (slower, still correct)
            else:
                if value == REVOKED:
                    raise Unauthenticated("session token is invalid or expired")
                if value is not None:
                    stored_hash, _, touched = value.partition(b"|")
                    if not secret_matches(stored_hash, parsed.secret):
                        raise Unauthenticated("session token is invalid or expired")
                    if time.time() - float(touched or 0) > PG_TOUCH_INTERVAL_S:
                        await self._touch(parsed, stored_hash.decode())
                    return Caller(parsed.user_id, parsed.session_id)
        return await self._authenticate_from_database(parsed)

    async def _authenticate_from_database(self, parsed: ParsedToken) -> Caller:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT secret_hash, revoked_at IS NOT NULL AS revoked,"
                        " extract(epoch FROM now() - last_used_at) AS idle_s"
                        " FROM sessions WHERE id = :sid AND user_id = :uid"
                    ),
                    {"sid": parsed.session_id, "uid": parsed.user_id},
                )
            ).first()
        if row is None or row.revoked or float(row.idle_s) > self._ttl_s:
            raise Unauthenticated("session token is invalid or expired")
        stored_hash = bytes(row.secret_hash).hex()
        if not secret_matches(stored_hash, parsed.secret):
            raise Unauthenticated("session token is invalid or expired")
        await self._touch(parsed, stored_hash, refill_nx=True)
        return Caller(parsed.user_id, parsed.session_id)

    async def _touch(self, parsed: ParsedToken, stored_hash: str, refill_nx: bool = False) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text("UPDATE sessions SET last_used_at = now() WHERE id = :sid"
                     " AND revoked_at IS NULL"),
                {"sid": parsed.session_id},
            )
        await self._redis_set(parsed.user_id, parsed.session_id, stored_hash, nx=refill_nx)

    async def _redis_set(self, user_id: str, session_id: str, secret_hash: str, *, nx: bool) -> None:
        if self._redis is None:
            return
        value = f"{secret_hash}|{int(time.time())}".encode()
        try:
            if nx:
                await self._redis.set(session_key(user_id, session_id), value, ex=self._ttl_s,
                                      nx=True)
            else:
                await self._redis.set(session_key(user_id, session_id), value, ex=self._ttl_s,
                                      xx=False)
        except Exception:
            pass  # the durable row is the truth; the next request refills the cache

    async def revoke(self, user_id: str, session_ids: list[str]) -> None:
        """PostgreSQL first (durable), then tombstones, so no replica can revive the session."""
        if not session_ids:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                text("UPDATE sessions SET revoked_at = now() WHERE user_id = :u"
                     " AND id = ANY(CAST(:ids AS uuid[])) AND revoked_at IS NULL"),
                {"u": user_id, "ids": session_ids},
            )
        if self._redis is not None:
            for sid in session_ids:
                try:
                    await self._redis.set(session_key(user_id, sid), REVOKED, ex=self._ttl_s)
                except Exception:
                    pass  # PostgreSQL already says revoked; a Redis miss falls back to it
