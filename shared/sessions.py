"""Sessions: the token format, the Redis entry and the durable PostgreSQL row.

A token is "<user_id>.<session_id>.<secret>". The ids are not secret; they let any component
(the gateway's one-round-trip Lua check, the service interceptor) find the Redis key
`session:{<user_id>}:<session_id>` without a lookup table, and the user's hash tag puts the
session and the rate-limit counter in one slot. The secret carries 256 random bits; only its
SHA-256 is stored, and it is compared in constant time.

Redis value: b"<sha256 hex>|<epoch seconds of the last PostgreSQL check>", TTL = idle timeout,
slid by GETEX on each use. A revoked session's key holds the tombstone b"revoked". Writes of a
valid entry go through a script that never overwrites a tombstone, so a reader racing the
revocation cannot put the session back from an older PostgreSQL read.

There is no in-process cache of sessions anywhere: every check reads Redis (or PostgreSQL), so a
tombstone takes effect on every replica of every service at once.

Revocation when Redis fails (the hole a tombstone alone leaves open). Revocation commits to
PostgreSQL first, then writes tombstones. If that write fails (the revoker cannot reach the
slot's master, a failover is under way, or an acknowledged write is lost with a dying master),
a still-valid entry may be served by Redis once it answers again, and GETEX would keep sliding it
forever. Two measures close this:

1. Entries expire as evidence: the timestamp in the value is the last time PostgreSQL confirmed
   the session. An entry older than `recheck_interval_s` (min(PG_TOUCH_INTERVAL_S, ttl / 3)) is
   re-confirmed by one primary-key UPDATE ... WHERE revoked_at IS NULL, which also refreshes
   last_used_at; a revoked row turns the entry into a tombstone. A revoked session can therefore
   never outlive `recheck_interval_s` after its revocation, whatever Redis lost; this needs no
   background process and survives a crash of the revoker.
2. The revoker keeps the failed tombstones and retries them every TOMBSTONE_RETRY_INTERVAL_S
   until Redis accepts them (or measure 1 has made them unnecessary), so in the usual case, a
   failover of a few seconds, the revocation is effective as soon as the slot is writable again.

A per-user "revoked before" marker in Redis was rejected: it is lost exactly like the tombstone
(same slot, same failure), and single-session logout would still need per-session state.
Re-checking PostgreSQL on every request was rejected too: it would put the database back on the
hot path that the cache exists to take it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.auth_context import Caller
from shared.errors import Unauthenticated
from shared.metrics import CACHE_REQUESTS

log = logging.getLogger(__name__)

REVOKED = b"revoked"
# PostgreSQL is re-confirmed (and last_used_at refreshed) at most this often per session; a
# Redis-less fallback may therefore end a session up to this much earlier than its sliding TTL
# (one UPDATE per request would put the session check back on the database).
PG_TOUCH_INTERVAL_S = 60
TOMBSTONE_RETRY_INTERVAL_S = 0.2
_MAX_TOKEN_LENGTH = 200
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
_INVALID_MESSAGE = "session token is invalid or expired"
_TOMBSTONE_BATCH = 100

# Write a verified entry unless the key holds a tombstone (ARGV: value, tombstone, ttl).
_SET_UNLESS_REVOKED = """
if redis.call('GET', KEYS[1]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
# Tombstones for several sessions of one user: one slot, one round trip (ARGV: tombstone, ttl).
_WRITE_TOMBSTONES = """
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return #KEYS
"""

_SELECT_SESSION = text(
    "SELECT secret_hash, revoked_at IS NOT NULL AS revoked,"
    " extract(epoch FROM now() - last_used_at) AS idle_s"
    " FROM sessions WHERE id = CAST(:sid AS uuid) AND user_id = CAST(:uid AS uuid)"
)
_TOUCH_SESSION = text(
    "UPDATE sessions SET last_used_at = now()"
    " WHERE id = CAST(:sid AS uuid) AND user_id = CAST(:uid AS uuid) AND revoked_at IS NULL"
    " RETURNING id"
)
_REVOKE_SESSIONS = text(
    "UPDATE sessions SET revoked_at = now() WHERE user_id = CAST(:u AS uuid)"
    " AND id = ANY(CAST(:ids AS uuid[])) AND revoked_at IS NULL"
)
_REVOKE_OTHER_SESSIONS = text(
    "UPDATE sessions SET revoked_at = now() WHERE user_id = CAST(:u AS uuid)"
    " AND id <> CAST(:keep AS uuid) AND revoked_at IS NULL RETURNING id::text"
)
_LIST_ACTIVE = text(
    "SELECT id::text, created_at, last_used_at, client_address, user_agent FROM sessions"
    " WHERE user_id = CAST(:u AS uuid) AND revoked_at IS NULL"
    " AND last_used_at > now() - make_interval(secs => :idle_s)"
    " ORDER BY last_used_at DESC, id LIMIT :n"
)


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


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created_at: datetime
    last_used_at: datetime
    client_address: str
    user_agent: str


def session_key(user_id: str, session_id: str) -> str:
    return f"session:{{{user_id}}}:{session_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _invalid() -> Unauthenticated:
    return Unauthenticated(_INVALID_MESSAGE)


def parse_token(token: str) -> ParsedToken:
    """Reject malformed tokens before any I/O, with one message that reveals nothing."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise _invalid()
    parts = token.split(".")
    if len(parts) != 3 or not _SECRET_PATTERN.fullmatch(parts[2]):
        raise _invalid()
    try:
        user_id = str(uuid.UUID(parts[0]))
        session_id = str(uuid.UUID(parts[1]))
    except ValueError:
        raise _invalid() from None
    if user_id != parts[0] or session_id != parts[1]:
        raise _invalid()  # only the canonical form, so one session has exactly one token spelling
    return ParsedToken(user_id, session_id, parts[2])


def secret_matches(stored_hash_hex: str | bytes, secret: str) -> bool:
    stored = stored_hash_hex if isinstance(stored_hash_hex, bytes) else stored_hash_hex.encode()
    return hmac.compare_digest(stored, hash_secret(secret).encode())


def recheck_interval_for(ttl_s: float) -> float:
    """How old (seconds since PostgreSQL last confirmed it) a cached entry may be before a reader
    must re-confirm the session against PostgreSQL (see the module docstring)."""
    return min(float(PG_TOUCH_INTERVAL_S), ttl_s / 3)


def decode_cached_entry(value: bytes) -> tuple[bytes, float] | None:
    """(secret hash hex, epoch of the last PostgreSQL check) from a cached entry; None when the
    value is a tombstone or not one of ours. Any reader of session keys (the gateway's Lua gate
    too) should treat an entry older than recheck_interval_for(ttl) as a miss."""
    stored_hash, sep, checked = value.partition(b"|")
    if not sep or len(stored_hash) != 64:
        return None
    try:
        return stored_hash, float(checked)
    except ValueError:
        return None


async def revoke_other_sessions_in(conn: AsyncConnection, user_id: str,
                                   keep_session_id: str) -> list[str]:
    """Revoke every other session of the user inside the caller's transaction (a password change
    commits with it). The caller must then call SessionStore.write_tombstones after commit."""
    rows = await conn.execute(_REVOKE_OTHER_SESSIONS, {"u": user_id, "keep": keep_session_id})
    return [str(r[0]) for r in rows]


class SessionStore:
    """Create, validate and revoke sessions in Redis (fast path) and PostgreSQL (durable)."""

    def __init__(self, engine: AsyncEngine, redis: RedisCluster | None, ttl_s: int) -> None:
        self._engine = engine
        self._redis = redis
        self._ttl_s = ttl_s
        self._recheck_s = recheck_interval_for(ttl_s)
        self._set_unless_revoked = redis.register_script(_SET_UNLESS_REVOKED) if redis else None
        self._tombstone_script = redis.register_script(_WRITE_TOMBSTONES) if redis else None
        # (user_id, session_id) -> monotonic time after which retrying is pointless (see above)
        self._pending_tombstones: dict[tuple[str, str], float] = {}
        self._retry_task: asyncio.Task[None] | None = None

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @property
    def recheck_interval_s(self) -> float:
        return self._recheck_s

    async def create(
        self, user_id: str, client_address: str = "", user_agent: str = ""
    ) -> NewSession:
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
        await self._cache_verified(user_id, session_id, secret_hash.encode())
        return NewSession(f"{user_id}.{session_id}.{secret}", user_id, session_id,
                          time.time() + self._ttl_s)

    async def authenticate(self, token: str) -> Caller:
        parsed = parse_token(token)
        value = await self._read_and_slide(parsed)
        if value == REVOKED:
            CACHE_REQUESTS.labels("session", "hit").inc()
            raise _invalid()
        entry = decode_cached_entry(value) if value is not None else None
        if entry is None:
            return await self._authenticate_from_database(parsed)
        CACHE_REQUESTS.labels("session", "hit").inc()
        stored_hash, checked_at = entry
        if not secret_matches(stored_hash, parsed.secret):
            raise _invalid()
        if time.time() - checked_at > self._recheck_s:
            await self._reconfirm(parsed, stored_hash)
        return Caller(parsed.user_id, parsed.session_id)

    async def _read_and_slide(self, parsed: ParsedToken) -> bytes | None:
        if self._redis is None:
            return None
        try:
            value = await self._redis.getex(
                session_key(parsed.user_id, parsed.session_id), ex=self._ttl_s
            )
        except Exception:
            CACHE_REQUESTS.labels("session", "fallback").inc()
            return None  # Redis down or slow: PostgreSQL decides (slower, still correct)
        if value is None:
            CACHE_REQUESTS.labels("session", "miss").inc()
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def _reconfirm(self, parsed: ParsedToken, stored_hash: bytes) -> None:
        """The cached entry is old evidence: ask PostgreSQL whether the session still stands."""
        async with self._engine.begin() as conn:
            still_valid = (await conn.execute(
                _TOUCH_SESSION, {"sid": parsed.session_id, "uid": parsed.user_id}
            )).first() is not None
        if not still_valid:
            await self.write_tombstones(parsed.user_id, [parsed.session_id])
            raise _invalid()
        await self._cache_verified(parsed.user_id, parsed.session_id, stored_hash)

    async def _authenticate_from_database(self, parsed: ParsedToken) -> Caller:
        ids = {"sid": parsed.session_id, "uid": parsed.user_id}
        async with self._engine.connect() as conn:
            row = (await conn.execute(_SELECT_SESSION, ids)).first()
            if row is None or float(row.idle_s) > self._ttl_s:
                raise _invalid()
            stored_hash = bytes(row.secret_hash).hex().encode()
            if not secret_matches(stored_hash, parsed.secret):
                raise _invalid()
            revoked = bool(row.revoked)
            if not revoked and float(row.idle_s) > self._recheck_s:
                revoked = (await conn.execute(_TOUCH_SESSION, ids)).first() is None
                await conn.commit()
        if revoked:
            # Put the tombstone back (a flush lost it) so that repeats stay off the database.
            await self._write_tombstones_once(parsed.user_id, [parsed.session_id])
            raise _invalid()
        await self._cache_verified(parsed.user_id, parsed.session_id, stored_hash)
        return Caller(parsed.user_id, parsed.session_id)

    async def _cache_verified(self, user_id: str, session_id: str, stored_hash: bytes) -> None:
        if self._set_unless_revoked is None:
            return
        value = stored_hash + b"|" + str(int(time.time())).encode()
        try:
            await self._set_unless_revoked(
                keys=[session_key(user_id, session_id)], args=[value, REVOKED, self._ttl_s]
            )
        except Exception:
            pass  # the durable row is the truth; the next request refills the cache

    async def revoke(self, user_id: str, session_ids: list[str]) -> None:
        """PostgreSQL first (durable), then tombstones, so no replica can revive the session."""
        ids = _canonical_ids(session_ids)
        if not ids or _canonical_id(user_id) is None:
            return
        async with self._engine.begin() as conn:
            await conn.execute(_REVOKE_SESSIONS, {"u": user_id, "ids": ids})
        await self.write_tombstones(user_id, ids)

    async def write_tombstones(self, user_id: str, session_ids: Iterable[str]) -> None:
        """Mark sessions revoked in Redis; what fails is retried in the background."""
        failed = await self._write_tombstones_once(user_id, list(session_ids))
        if failed:
            log.warning("session tombstones not written, retrying",
                        extra={"fields": {"user_id": user_id, "sessions": len(failed)}})
            give_up_at = time.monotonic() + self._recheck_s + 1.0
            for sid in failed:
                self._pending_tombstones[(user_id, sid)] = give_up_at
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.get_running_loop().create_task(
                    self._retry_pending_tombstones(), name="session-tombstone-retry"
                )

    async def _write_tombstones_once(self, user_id: str, session_ids: list[str]) -> list[str]:
        """Returns the ids whose tombstone could not be written."""
        if self._tombstone_script is None:
            return []
        failed: list[str] = []
        for start in range(0, len(session_ids), _TOMBSTONE_BATCH):
            batch = session_ids[start:start + _TOMBSTONE_BATCH]
            try:
                await self._tombstone_script(
                    keys=[session_key(user_id, sid) for sid in batch], args=[REVOKED, self._ttl_s]
                )
            except Exception:
                failed.extend(batch)
        return failed

    async def _retry_pending_tombstones(self) -> None:
        while self._pending_tombstones:
            await asyncio.sleep(TOMBSTONE_RETRY_INTERVAL_S)
            now = time.monotonic()
            by_user: dict[str, list[str]] = {}
            for (user_id, sid), give_up_at in list(self._pending_tombstones.items()):
                if now > give_up_at:
                    del self._pending_tombstones[(user_id, sid)]  # re-confirmation covers it now
                else:
                    by_user.setdefault(user_id, []).append(sid)
            for user_id, sids in by_user.items():
                still_failed = set(await self._write_tombstones_once(user_id, sids))
                for sid in sids:
                    if sid not in still_failed:
                        self._pending_tombstones.pop((user_id, sid), None)

    @property
    def pending_tombstones(self) -> int:
        return len(self._pending_tombstones)

    async def list_active(self, user_id: str, limit: int = 100) -> list[SessionInfo]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                _LIST_ACTIVE, {"u": user_id, "idle_s": float(self._ttl_s), "n": limit}
            )
            return [SessionInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def aclose(self) -> None:
        """Stop retrying tombstones (re-confirmation still bounds what is left)."""
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None


def _canonical_id(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except (ValueError, TypeError, AttributeError):
        return None


def _canonical_ids(raw_ids: Iterable[str]) -> list[str]:
    return [sid for sid in (_canonical_id(r) for r in raw_ids) if sid is not None]
