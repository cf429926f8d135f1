"""What the auth service's retention job prunes (docs/database.md): sessions that ended (revoked,
idle past the session TTL, or past their absolute lifetime) more than `session_retention_s` ago.
Until then an ended session stays listed for support and audit; no reader accepts it (a deleted
row is as refused as a revoked one: shared/session_confirmation.py finds nothing to confirm)."""

from __future__ import annotations

from services.auth.service_layer.ports import SessionRetentionStore
from shared.retention import PruneRule


def session_retention_rules(store: SessionRetentionStore, *, idle_ttl_s: float,
                            absolute_ttl_s: float, keep_s: float) -> list[PruneRule]:
    async def sessions(limit: int) -> int:
        return await store.delete_ended_sessions(idle_ttl_s=idle_ttl_s,
                                                 absolute_ttl_s=absolute_ttl_s, keep_s=keep_s,
                                                 limit=limit)

    return [PruneRule("sessions", sessions)]
