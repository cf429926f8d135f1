"""The auth service's sessions: created at login, revoked at logout and password change, listed.
PostgreSQL holds the durable row (the secret's hash only); Redis the signed entry every service's
request gate reads (shared/sessions.py says what an entry means, shared/request_gate.py reads it).

Revocation when Redis fails (the hole a tombstone alone leaves open). Revocation commits to
PostgreSQL first, then writes tombstones. If that write fails (the revoker cannot reach the
slot's master, a failover is under way, or an acknowledged write is lost with a dying master),
a still-valid entry may be served by Redis once it answers again. Two measures close this:

1. Entries expire as evidence: an entry older than the recheck interval is re-confirmed by
   PostgreSQL (shared/sessions.py), so a revoked session can never outlive that interval after
   its revocation, whatever Redis lost; this needs no background process and survives a crash
   of the revoker.
2. The revoker keeps the failed tombstones and retries them every TOMBSTONE_RETRY_INTERVAL_S
   until Redis accepts them (or measure 1 has made them unnecessary), so in the usual case, a
   failover of a few seconds, the revocation is effective as soon as the slot is writable again.

A per-user "revoked before" marker in Redis was rejected: it is lost exactly like the tombstone
(same slot, same failure), and single-session logout would still need per-session state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable

from services.auth.domain import NewSession, SessionInfo
from shared.identifiers import canonical_uuid
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType, unavailable_when_unreachable
from shared.redis_pipeline import ClusterPipeline, Script
from shared.sessions import (
    REVOKED,
    SessionEntrySigner,
    hash_secret,
    recheck_interval_for,
    session_key,
)
from shared.task_stopping import stop_tasks

log = logging.getLogger(__name__)

TOMBSTONE_RETRY_INTERVAL_S = 0.2
_TOMBSTONE_BATCH = 100

# Write a confirmed entry unless the key holds a tombstone (ARGV: value, tombstone, ttl).
_SET_UNLESS_REVOKED = Script("""
if redis.call('GET', KEYS[1]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
""")
# Tombstones for several sessions of one user: one slot, one round trip (ARGV: tombstone, ttl).
_WRITE_TOMBSTONES = Script("""
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return #KEYS
""")

_INSERT_SESSION = (
    "INSERT INTO sessions (user_id, secret_hash, client_address, user_agent)"
    " VALUES (%(u)s, %(h)s, %(a)s, %(ua)s)"
    " RETURNING id, floor(extract(epoch FROM created_at))::bigint"
)
_REVOKE_SESSIONS = (
    "UPDATE sessions SET revoked_at = now() WHERE user_id = %(u)s::uuid"
    " AND id = ANY(%(ids)s::uuid[]) AND revoked_at IS NULL RETURNING id::text"
)
# Sessions already past their idle or absolute expiry are revoked too: harmless, and no reader
# would accept them anyway.
_REVOKE_ALL = (
    "UPDATE sessions SET revoked_at = now() WHERE user_id = %(u)s::uuid AND revoked_at IS NULL"
    " AND id IS DISTINCT FROM %(keep)s::uuid RETURNING id::text"
)
_LIST_ACTIVE = (
    "SELECT id::text, created_at, last_used_at, client_address, user_agent FROM sessions"
    " WHERE user_id = %(u)s::uuid AND revoked_at IS NULL"
    " AND last_used_at > now() - make_interval(secs => %(idle_s)s)"
    " AND created_at > now() - make_interval(secs => %(absolute_s)s)"
    " ORDER BY last_used_at DESC, id LIMIT %(n)s"
)


class SessionStore:
    """Create and revoke sessions in PostgreSQL (durable) and Redis (what readers check)."""

    def __init__(self, pool: PoolType, redis: ClusterPipeline | None,
                 signer: SessionEntrySigner, *, ttl_s: int, absolute_ttl_s: int) -> None:
        self._pool = pool
        self._redis = redis
        self._signer = signer
        self._ttl_s = ttl_s
        self._absolute_ttl_s = absolute_ttl_s
        self._recheck_s = recheck_interval_for(ttl_s)
        # (user_id, session_id) -> monotonic time after which retrying is pointless (see above)
        self._pending_tombstones: dict[tuple[str, str], float] = {}
        self._retry_task: asyncio.Task[None] | None = None

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def create(
        self, user_id: str, client_address: str = "", user_agent: str = ""
    ) -> NewSession:
        secret = secrets.token_urlsafe(32)
        secret_hash = hash_secret(secret)
        DB_QUERIES.labels("auth", "create_session").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_INSERT_SESSION, {
                    "u": user_id, "h": bytes.fromhex(secret_hash), "a": client_address[:100],
                    "ua": user_agent[:300],
                })).fetchone()
        assert row is not None  # INSERT ... RETURNING of one row
        session_id, created_at = str(row[0]), int(row[1])
        await self._cache_entry(user_id, session_id,
                                self._signer.encode(secret_hash, int(time.time()), created_at))
        expires_at = min(time.time() + self._ttl_s, created_at + self._absolute_ttl_s)
        return NewSession(f"{user_id}.{session_id}.{secret}", user_id, session_id, expires_at)

    async def _cache_entry(self, user_id: str, session_id: str, entry: bytes) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.run(_SET_UNLESS_REVOKED, [session_key(user_id, session_id)],
                                  [entry, REVOKED, self._ttl_s])
        except Exception:
            pass  # the durable row is the truth; the first request confirms and caches it

    async def revoke(self, user_id: str, session_ids: list[str]) -> list[str]:
        """PostgreSQL first (durable), then tombstones, so no replica can revive the session.
        Returns the ids that were active (only the user's own can match)."""
        ids = [sid for sid in (canonical_uuid(r) for r in session_ids) if sid is not None]
        if not ids or canonical_uuid(user_id) is None:
            return []
        DB_QUERIES.labels("auth", "revoke_sessions").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(_REVOKE_SESSIONS,
                                                 {"u": user_id, "ids": ids})).fetchall()
        # Tombstones for every id asked, not only the rows that changed: a session revoked a
        # moment ago whose tombstone failed gets another chance.
        await self.write_tombstones(user_id, ids)
        return [str(r[0]) for r in rows]

    async def revoke_all(self, user_id: str, *, except_session_id: str | None) -> list[str]:
        """Every active session of the user but one (or none), the same way as `revoke`."""
        DB_QUERIES.labels("auth", "revoke_all_sessions").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(_REVOKE_ALL, {
                    "u": user_id, "keep": except_session_id})).fetchall()
        revoked = [str(r[0]) for r in rows]
        await self.write_tombstones(user_id, revoked)
        return revoked

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
        if self._redis is None:
            return []
        failed: list[str] = []
        for start in range(0, len(session_ids), _TOMBSTONE_BATCH):
            batch = session_ids[start:start + _TOMBSTONE_BATCH]
            try:
                await self._redis.run(_WRITE_TOMBSTONES,
                                      [session_key(user_id, sid) for sid in batch],
                                      [REVOKED, self._ttl_s])
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
        DB_QUERIES.labels("auth", "list_sessions").inc()
        with unavailable_when_unreachable():
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_LIST_ACTIVE, {
                    "u": user_id, "idle_s": float(self._ttl_s),
                    "absolute_s": float(self._absolute_ttl_s), "n": limit,
                })
                rows = await cursor.fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def aclose(self) -> None:
        """Stop retrying tombstones (re-confirmation still bounds what is left)."""
        if self._retry_task is not None:
            await stop_tasks([self._retry_task])
            self._retry_task = None
