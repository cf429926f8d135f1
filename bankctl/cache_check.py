"""A user's cache entries compared with PostgreSQL, read-only: the balance and recent-transaction
entries of each of the user's accounts, and the user's session entries.

Verdicts: `ok` (equal to PostgreSQL), `absent` and `tombstone` (a read goes to PostgreSQL),
`stale` (an older version: cache-aside allows it until an event or the TTL replaces it; a read
with min_version bypasses it) and the problems, which make the check fail: `mismatch` (same
version, other content), `ahead` (a version PostgreSQL does not have), `unreadable`, and
sessions that Redis and PostgreSQL disagree about. Nothing is written: Redis GET/TTL/CLUSTER
GETKEYSINSLOT, PostgreSQL in a read-only transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from redis.cluster import ClusterNode, RedisCluster

from services.account.service_layer.cache_layout import (
    BalanceCodec,
    RecentTransactionsCodec,
    balance_key,
    recent_key,
)
from shared.cache.entry import decode_entry
from shared.config import Settings
from shared.redis_client import redis_connection_options
from shared.sessions import REVOKED, SessionEntrySigner

PROBLEMS = frozenset({"mismatch", "ahead", "unreadable", "session_mismatch"})


@dataclass(frozen=True)
class Finding:
    key: str
    verdict: str
    detail: str = ""

    @property
    def problem(self) -> bool:
        return self.verdict in PROBLEMS


def open_redis(settings: Settings) -> RedisCluster:
    nodes = [ClusterNode(host, port)  # type: ignore[no-untyped-call]
             for host, port in settings.redis_startup_nodes]
    # The operator's Redis user and TLS, as the services have theirs (BANK_REDIS_*).
    return RedisCluster(startup_nodes=nodes, decode_responses=False, socket_timeout=2.0,
                        **redis_connection_options(settings))


def check_user(settings: Settings, user_id: str) -> list[Finding]:
    redis = open_redis(settings)
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as db:
            db.read_only = True
            return [*_accounts(redis, db, user_id), *_sessions(redis, db, settings, user_id)]
    finally:
        redis.close()


def user_id_of(settings: Settings, email: str) -> str | None:
    with psycopg.connect(settings.database_url, connect_timeout=5) as db:
        db.read_only = True
        row = db.execute("SELECT id::text FROM users WHERE email = %s",
                         (email.lower(),)).fetchone()
    return None if row is None else str(row[0])


def _get(redis: RedisCluster, key: str | bytes) -> bytes | None:
    value = redis.get(key)
    return value if isinstance(value, bytes) else None


def _versioned(key: str, raw: bytes | None, db_version: int) -> tuple[Finding | None, Any]:
    """A finding when the entry is not at PostgreSQL's version, else the decoded entry."""
    if raw is None:
        return Finding(key, "absent"), None
    entry = decode_entry(raw)
    if entry is None:
        return Finding(key, "unreadable", raw[:40].decode(errors="replace")), None
    if entry.tombstone:
        return Finding(key, "tombstone", f"below version {entry.version}"), None
    if entry.version < db_version:
        return Finding(key, "stale", f"version {entry.version} < {db_version}"), None
    if entry.version > db_version:
        return Finding(key, "ahead", f"version {entry.version} > {db_version}"), None
    return None, entry


def _accounts(redis: RedisCluster, db: psycopg.Connection[Any], user_id: str
              ) -> Iterator[Finding]:
    accounts = db.execute("SELECT id::text, currency, balance, version FROM accounts"
                          " WHERE owner_user_id = %s ORDER BY created_at", (user_id,)).fetchall()
    for account_id, currency, balance, version in accounts:
        key = balance_key(account_id)
        finding, entry = _versioned(key, _get(redis, key), version)
        if entry is not None:
            cached = BalanceCodec(account_id).from_entry(entry)
            if (cached.currency, cached.minor_units, cached.owner_user_id) == (
                    currency.strip(), balance, user_id):
                finding = Finding(key, "ok", f"{balance} {currency} at version {version}")
            else:
                finding = Finding(key, "mismatch", f"cache {cached.minor_units} {cached.currency}"
                                  f" vs PostgreSQL {balance} {currency} at version {version}")
        yield finding or Finding(key, "unreadable")
        yield _recent(redis, db, account_id, version)


def _recent(redis: RedisCluster, db: psycopg.Connection[Any], account_id: str,
            version: int) -> Finding:
    key = recent_key(account_id)
    finding, entry = _versioned(key, _get(redis, key), version)
    if entry is None:
        return finding or Finding(key, "unreadable")
    rows = db.execute("SELECT id, amount, balance_after FROM transactions WHERE account_id = %s"
                      " ORDER BY created_at DESC, id DESC LIMIT 10", (account_id,)).fetchall()
    cached = RecentTransactionsCodec(account_id).from_entry(entry)
    cached_rows = [(e.entry_id, e.amount, e.balance_after) for e in cached.entries]
    if cached_rows == [tuple(row) for row in rows]:
        return Finding(key, "ok", f"{len(rows)} entries at version {version}")
    return Finding(key, "mismatch", f"entries {[r[0] for r in cached_rows]} vs PostgreSQL"
                   f" {[r[0] for r in rows]} at version {version}")


def _sessions(redis: RedisCluster, db: psycopg.Connection[Any], settings: Settings,
              user_id: str) -> Iterator[Finding]:
    tag = f"{{{user_id}}}"
    # Every key of the user's hash tag lives in one slot, on one node: no SCAN of the cluster.
    node = redis.get_node_from_key(tag)  # type: ignore[no-untyped-call]
    slot = redis.keyslot(tag)  # type: ignore[no-untyped-call]
    listed: list[bytes | str] = redis.execute_command(  # type: ignore[no-untyped-call]
        "CLUSTER GETKEYSINSLOT", slot, 10_000, target_nodes=node)
    keys = [k if isinstance(k, bytes) else k.encode() for k in listed]
    signer = SessionEntrySigner(settings.session_signing_key) \
        if settings.session_signing_key else None
    prefix = f"session:{tag}:".encode()
    for key in sorted(k for k in keys if k.startswith(prefix)):
        session_id = key[len(prefix):].decode()
        raw = _get(redis, key)
        row = db.execute("SELECT encode(secret_hash, 'hex'), revoked_at IS NOT NULL"
                         " FROM sessions WHERE id = %s AND user_id = %s",
                         (session_id, user_id)).fetchone()
        yield _session(key.decode(), raw, row, signer)


def _session(key: str, raw: bytes | None, row: Any, signer: SessionEntrySigner | None
             ) -> Finding:
    if raw is None:
        return Finding(key, "absent", "expired while checking")
    if raw == REVOKED:
        if row is None or row[1]:
            return Finding(key, "tombstone", "revoked in both")
        return Finding(key, "session_mismatch", "revoked in Redis, live in PostgreSQL")
    if row is None or row[1]:
        return Finding(key, "session_mismatch", "live in Redis, revoked or missing in PostgreSQL")
    if signer is None:
        return Finding(key, "ok", "live in both (BANK_SESSION_SIGNING_KEY unset: not verified)")
    entry = signer.decode(raw)
    if entry is None:
        # Another signing key (a rotation): the gate re-confirms it in PostgreSQL.
        return Finding(key, "stale", "not signed with the current key")
    if entry.secret_hash != row[0]:
        return Finding(key, "session_mismatch", "secret hash differs from PostgreSQL's")
    return Finding(key, "ok", "live in both")
