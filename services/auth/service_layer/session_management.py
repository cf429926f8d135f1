"""Use cases of sessions already open: log out, revoke one, list them, validate a token.
Revoking them all needs the password: service_layer/credentials.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.auth.domain import SessionInfo
from services.auth.service_layer.ports import AuthDependencies
from shared.auth_context import Caller
from shared.errors import InvalidArgument, NotFound
from shared.identifiers import canonical_uuid

MAX_LISTED_SESSIONS = 100


@dataclass(frozen=True)
class ValidatedSession:
    caller: Caller
    expires_at: float


async def logout(deps: AuthDependencies, caller: Caller) -> None:
    await deps.sessions.revoke(caller.user_id, [caller.session_id])


async def revoke_session(deps: AuthDependencies, caller: Caller, raw_session_id: str) -> None:
    """One of the caller's own active sessions ends at once, on every replica. Another user's
    session answers exactly like an unknown one (NOT_FOUND), as does one already ended."""
    if not raw_session_id:
        raise InvalidArgument("session_id is required")
    session_id = canonical_uuid(raw_session_id)
    if session_id is None:
        raise InvalidArgument("session_id must be a UUID")
    if not await deps.sessions.revoke(caller.user_id, [session_id]):
        raise NotFound(f"session {session_id} not found")


async def list_sessions(deps: AuthDependencies, caller: Caller) -> list[SessionInfo]:
    return await deps.sessions.list_active(caller.user_id, MAX_LISTED_SESSIONS)


async def validate_session(deps: AuthDependencies, token: str) -> ValidatedSession:
    """A successful check is a use: it slides the idle timeout, hence the new expiry."""
    caller = await deps.checker.authenticate(token)
    return ValidatedSession(caller, time.time() + deps.sessions.ttl_s)
