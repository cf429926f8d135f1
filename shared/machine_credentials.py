"""Machine credentials: how a caller that acts for no user (a treasury job, a reconciliation)
proves who it is, and what it may do.

A credential is a row of `machine_credentials` (name, scopes, the SHA-256 of a 256-bit secret);
its token is "mc1.<credential id>.<secret>", sent as `authorization: Bearer <token>` like a
session's. An RPC that acts for no user names the one scope it needs in its proto
(`option (bank.v1.machine_scope)`); the service interceptor lets a machine credential call only
such RPCs, only with that scope, and refuses end users' sessions on them.

Checks are few (batch jobs, not customers) and each goes to PostgreSQL, remembered for
`cache_s` (5 s) per replica: a revocation takes effect within that. Create, list and revoke
them with `python -m services.auth.machine_credentials`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import psycopg
from psycopg_pool import PoolTimeout

from shared.auth_context import MachineCaller
from shared.errors import Unauthenticated, Unavailable
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType

TOKEN_PREFIX = "mc1."
_TOKEN = re.compile(r"mc1\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                    r"\.([A-Za-z0-9_-]{43})")
_INVALID = "machine credential is invalid or revoked"
_MAX_CACHED = 1000

_SELECT = ("SELECT name, secret_hash, scopes FROM machine_credentials"
           " WHERE id = %(id)s::uuid AND revoked_at IS NULL")


def is_machine_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class MachineCredentials:
    def __init__(self, pool: PoolType, service: str, *, cache_s: float = 5.0) -> None:
        self._pool = pool
        self._queries = DB_QUERIES.labels(service, "machine_credential")
        self._cache_s = cache_s
        # credential id -> (stored hash, caller, until)
        self._cache: dict[str, tuple[bytes, MachineCaller, float]] = {}

    async def verify(self, token: str) -> MachineCaller:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise Unauthenticated(_INVALID)
        credential_id, secret = match.group(1), match.group(2)
        cached = self._cache.get(credential_id)
        if cached is None or cached[2] < time.monotonic():
            cached = await self._load(credential_id)
        stored, caller, _ = cached
        if not hmac.compare_digest(stored, secret_hash(secret)):
            raise Unauthenticated(_INVALID)
        return caller

    async def _load(self, credential_id: str) -> tuple[bytes, MachineCaller, float]:
        self._queries.inc()
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_SELECT, {"id": credential_id})).fetchone()
        except (PoolTimeout, psycopg.OperationalError) as err:
            raise Unavailable("machine credentials cannot be checked right now; retry") from err
        if row is None:
            self._cache.pop(credential_id, None)
            raise Unauthenticated(_INVALID)
        entry = (bytes(row[1]), MachineCaller(credential_id, str(row[0]), frozenset(row[2])),
                 time.monotonic() + self._cache_s)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[credential_id] = entry
        return entry
