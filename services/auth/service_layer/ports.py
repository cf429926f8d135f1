"""What the use cases need from the outside world. The real adapters live in adapters/, the fakes
for unit tests in adapters/fakes.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.auth.domain import (
    FixedWindow,
    NewSession,
    Registration,
    RisingDelay,
    SessionInfo,
    StoredCredentials,
)
from services.auth.service_layer.device_tokens import DeviceTokens
from shared.auth_context import Caller


class UserRepository(Protocol):
    async def register(self, email: str, name: str, password_hash: str,
                       currency: str) -> Registration:
        """Create the user and the first account in one transaction (EmailAlreadyRegistered)."""
        ...

    async def email_taken(self, email: str) -> bool:
        """Whether a user (system users included) holds this email: asked before hashing."""
        ...

    async def credentials_by_email(self, email: str) -> StoredCredentials | None: ...

    async def credentials_by_id(self, user_id: str) -> StoredCredentials | None: ...

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Rehash on login: only if nobody changed the password meanwhile."""
        ...

    async def change_password(self, user_id: str, old_hash: str, new_hash: str,
                              keep_session_id: str) -> list[str] | None:
        """New hash and revocation of every other session, one transaction. Returns the revoked
        session ids, or None when the password changed concurrently (nothing written)."""
        ...


class Sessions(Protocol):
    @property
    def ttl_s(self) -> int: ...

    async def create(self, user_id: str, client_address: str = "",
                     user_agent: str = "") -> NewSession: ...

    async def revoke(self, user_id: str, session_ids: list[str]) -> list[str]:
        """End these sessions of this user (PostgreSQL, then tombstones); returns the ids that
        were active and are ended now (others' sessions are never touched)."""
        ...

    async def revoke_all(self, user_id: str, *, except_session_id: str | None) -> list[str]:
        """End every active session of the user but `except_session_id`; returns their ids."""
        ...

    async def write_tombstones(self, user_id: str, session_ids: Iterable[str]) -> None: ...

    async def list_active(self, user_id: str, limit: int = 100) -> list[SessionInfo]: ...


class SessionRetentionStore(Protocol):
    async def delete_ended_sessions(self, *, idle_ttl_s: float, absolute_ttl_s: float,
                                    keep_s: float, limit: int) -> int:
        """Sessions that ended (revoked, idle past `idle_ttl_s`, or older than `absolute_ttl_s`)
        more than `keep_s` ago; at most `limit`."""
        ...


class SessionChecker(Protocol):
    async def authenticate(self, token: str) -> Caller:
        """The token's session as every service's request gate sees it (shared/request_gate.py),
        without counting a request; Unauthenticated when it does not stand."""
        ...


@dataclass(frozen=True)
class AttemptReservation:
    """Slots taken in the attempt counters before a password check; given back when the attempt
    was no guess. `forget_on_success`: the counters a right password clears altogether."""

    keys: tuple[str, ...]
    forget_on_success: tuple[str, ...] = ()


AttemptRule = FixedWindow | RisingDelay
CounterRule = tuple[str, AttemptRule]


class AttemptCounters(Protocol):
    """Durable attempt counters, shared by every replica (adapters/attempt_counters.py)."""

    async def take(self, rules: Sequence[CounterRule]) -> float | None:
        """Count one attempt in every counter if each rule lets it go now, atomically: None,
        or the longest wait in seconds and nothing counted."""
        ...

    async def give_back(self, keys: Sequence[str], clear: Sequence[str] = ()) -> None:
        """One attempt less in each counter (never below zero, never reviving an ended
        window); the counters in `clear` are forgotten altogether."""
        ...


class LoginLimiter(Protocol):
    async def reserve(self, email: str, client_address: str,
                      device: str | None = None) -> AttemptReservation:
        """Count one attempt against the email (or the owner's known `device`, see
        service_layer/device_tokens.py) and the client address, or raise ResourceExhausted
        (with retry_after_s) when the rules refuse it now."""
        ...

    async def release(self, reservation: AttemptReservation) -> None:
        """The attempt was no guess (an outage): give the slots back."""
        ...

    async def succeeded(self, reservation: AttemptReservation) -> None:
        """The password was right: give the slots back and forget the email's failures."""
        ...


class RegisterLimiter(Protocol):
    async def reserve(self, client_address: str) -> AttemptReservation:
        """Count one registration attempt, or raise ResourceExhausted."""
        ...

    async def release(self, reservation: AttemptReservation) -> None:
        """The attempt was not served (UNAVAILABLE): give its slots back."""
        ...


class PasswordHasher(Protocol):
    async def hash(self, normalized_password: str) -> str: ...

    async def verify(self, stored_hash: str, normalized_password: str) -> bool: ...

    async def verify_dummy(self, normalized_password: str) -> None: ...

    def needs_rehash(self, stored_hash: str) -> bool: ...


class CacheWarmer(Protocol):
    def warm(self, token: str) -> None:
        """Ask the account service to warm the cache of the session's user, and return at once:
        the login reply never waits for it, and its failure is not the login's."""
        ...


@dataclass(frozen=True)
class AuthDependencies:
    users: UserRepository
    sessions: Sessions
    checker: SessionChecker
    limiter: LoginLimiter
    register_limiter: RegisterLimiter
    hasher: PasswordHasher
    warmer: CacheWarmer
    device_tokens: DeviceTokens
