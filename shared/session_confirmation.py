"""PostgreSQL's word on a session, for the request gate of every service: one UPDATE that both
checks the session (not revoked, secret, idle and absolute expiry) and records the use.

Asked only when Redis cannot vouch for the session: its entry is missing, stale (older than the
recheck interval), unreadable, or Redis is unavailable. The secret's hash is part of the WHERE
clause, so a request with a wrong secret neither passes nor keeps the session alive.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from shared.errors import Unavailable
from shared.metrics import DB_QUERIES
from shared.pg_pool import PoolType
from shared.sessions import ParsedToken

_CONFIRM = (
    "UPDATE sessions SET last_used_at = now()"
    " WHERE id = %(sid)s::uuid AND user_id = %(uid)s::uuid"
    " AND secret_hash = decode(%(hash)s, 'hex') AND revoked_at IS NULL"
    " AND last_used_at > now() - make_interval(secs => %(idle_s)s)"
    " AND created_at > now() - make_interval(secs => %(absolute_s)s)"
    " RETURNING floor(extract(epoch FROM created_at))::bigint"
)


class SessionConfirmations:
    def __init__(self, pool: PoolType, service: str, *, idle_ttl_s: int,
                 absolute_ttl_s: int) -> None:
        self._pool = pool
        self._queries = DB_QUERIES.labels(service, "confirm_session")
        self._idle_s = idle_ttl_s
        self._absolute_s = absolute_ttl_s

    async def confirm(self, token: ParsedToken) -> int | None:
        """The session's creation (epoch s) when it stands, else None. UNAVAILABLE when
        PostgreSQL cannot answer: nobody is let in on a guess."""
        self._queries.inc()
        params = {"sid": token.session_id, "uid": token.user_id, "hash": token.secret_hash,
                  "idle_s": self._idle_s, "absolute_s": self._absolute_s}
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_CONFIRM, params)).fetchone()
        except (PoolTimeout, psycopg.OperationalError) as err:
            raise Unavailable("sessions cannot be checked right now; retry") from err
        return None if row is None else int(row[0])
