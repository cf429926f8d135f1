"""Use cases of sessions already open: log out, list them, validate a token."""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.auth.domain import SessionInfo
from services.auth.service_layer.ports import AuthDependencies
from shared.auth_context import Caller

MAX_LISTED_SESSIONS = 100


@dataclass(frozen=True)
class ValidatedSession:
    caller: Caller
    expires_at: float


async def logout(deps: AuthDependencies, caller: Caller) -> None:
    await deps.sessions.revoke(caller.user_id, [caller.session_id])


async def list_sessions(deps: AuthDependencies, caller: Caller) -> list[SessionInfo]:
    return await deps.sessions.list_active(caller.user_id, MAX_LISTED_SESSIONS)


async def validate_session(deps: AuthDependencies, token: str) -> ValidatedSession:
    """A successful check is a use: it slides the idle timeout, hence the new expiry."""
    caller = await deps.checker.authenticate(token)
    return ValidatedSession(caller, time.time() + deps.sessions.ttl_s)
