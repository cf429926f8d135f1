"""In-memory stand-ins for the adapters, for unit tests of the use cases (no mock.patch)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.auth.domain import (
    EmailAlreadyRegistered,
    NewSession,
    Registration,
    SessionInfo,
    StoredCredentials,
    Window,
)
from services.auth.service_layer.ports import CounterRule, PasswordHasher
from shared.auth_context import Caller
from shared.errors import Unauthenticated, Unavailable
from shared.sessions import parse_token


class FakeUserRepository:
    def __init__(self) -> None:
        self.users: dict[str, StoredCredentials] = {}  # by email
        self.accounts: dict[str, tuple[str, str]] = {}  # account id -> (owner, currency)
        self.revoked_by_change: list[str] = []
        self.sessions: FakeSessions | None = None  # change_password revokes through it
        self.down = False  # the database is unreachable

    async def register(self, email: str, name: str, password_hash: str,
                       currency: str) -> Registration:
        if email in self.users:
            raise EmailAlreadyRegistered()
        user_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.users[email] = StoredCredentials(user_id, email, password_hash)
        self.accounts[account_id] = (user_id, currency)
        return Registration(user_id, account_id)

    async def email_taken(self, email: str) -> bool:
        return email in self.users

    async def credentials_by_email(self, email: str) -> StoredCredentials | None:
        if self.down:
            raise Unavailable("database unavailable")
        return self.users.get(email)

    async def credentials_by_id(self, user_id: str) -> StoredCredentials | None:
        return next((c for c in self.users.values() if c.user_id == user_id), None)

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        for email, creds in self.users.items():
            if creds.user_id == user_id and creds.password_hash == old_hash:
                self.users[email] = StoredCredentials(user_id, email, new_hash)
                return True
        return False

    async def change_password(self, user_id: str, old_hash: str, new_hash: str,
                              keep_session_id: str) -> list[str] | None:
        if not await self.replace_password_hash(user_id, old_hash, new_hash):
            return None
        revoked: list[str] = []
        if self.sessions is not None:
            revoked = self.sessions.revoke_all_except(user_id, keep_session_id)
        return revoked


@dataclass
class _FakeSession:
    user_id: str
    secret: str
    created_at: float
    client_address: str
    user_agent: str
    revoked: bool = False


class FakeSessions:
    """Sessions in a dict; tokens have the real format so parse_token applies."""

    def __init__(self, ttl_s: int = 900) -> None:
        self._ttl_s = ttl_s
        self.sessions: dict[str, _FakeSession] = {}
        self.tombstoned: list[str] = []

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def create(self, user_id: str, client_address: str = "",
                     user_agent: str = "") -> NewSession:
        session_id = str(uuid.uuid4())
        secret = uuid.uuid4().hex + "A" * 11  # 43 url-safe characters, like token_urlsafe(32)
        self.sessions[session_id] = _FakeSession(user_id, secret, time.time(), client_address,
                                                 user_agent)
        return NewSession(f"{user_id}.{session_id}.{secret}", user_id, session_id,
                          time.time() + self._ttl_s)

    async def authenticate(self, token: str) -> Caller:
        parsed = parse_token(token)
        found = self.sessions.get(parsed.session_id)
        if (found is None or found.revoked or found.user_id != parsed.user_id
                or found.secret != parsed.secret):
            raise Unauthenticated("session token is invalid or expired")
        return Caller(parsed.user_id, parsed.session_id)

    async def revoke(self, user_id: str, session_ids: list[str]) -> list[str]:
        revoked = []
        for sid in session_ids:
            found = self.sessions.get(sid)
            if found is not None and found.user_id == user_id and not found.revoked:
                found.revoked = True
                revoked.append(sid)
        await self.write_tombstones(user_id, session_ids)
        return revoked

    async def revoke_all(self, user_id: str, *, except_session_id: str | None) -> list[str]:
        revoked = self.revoke_all_except(user_id, except_session_id)
        await self.write_tombstones(user_id, revoked)
        return revoked

    def revoke_all_except(self, user_id: str, keep_session_id: str | None) -> list[str]:
        revoked = [sid for sid, s in self.sessions.items()
                   if s.user_id == user_id and sid != keep_session_id and not s.revoked]
        for sid in revoked:
            self.sessions[sid].revoked = True
        return revoked

    async def write_tombstones(self, user_id: str, session_ids: Iterable[str]) -> None:
        self.tombstoned.extend(session_ids)

    async def list_active(self, user_id: str, limit: int = 100) -> list[SessionInfo]:
        found = [
            SessionInfo(sid, datetime.fromtimestamp(s.created_at, UTC),
                        datetime.fromtimestamp(s.created_at, UTC), s.client_address,
                        s.user_agent)
            for sid, s in self.sessions.items() if s.user_id == user_id and not s.revoked
        ]
        return found[:limit]


@dataclass
class FakeAttemptCounters:
    """The PostgreSQL counters' contract over a dict, on a clock the test moves."""

    clock: Callable[[], float] = time.time
    counters: dict[str, Window] = field(default_factory=dict)

    async def take(self, rules: Sequence[CounterRule]) -> float | None:
        now = self.clock()
        verdicts = [(key, rule.admit(self.counters.get(key, Window(0, now)), now))
                    for key, rule in rules]
        waits = [v for _, v in verdicts if not isinstance(v, Window)]
        if waits:
            return max(waits)
        self.counters.update((key, v) for key, v in verdicts if isinstance(v, Window))
        return None

    async def give_back(self, keys: Sequence[str], clear: Sequence[str] = ()) -> None:
        now = self.clock()
        for key in keys:
            state = self.counters.get(key)
            if state is None or state.attempts <= 0 or state.ends_at <= now:
                continue
            self.counters[key] = Window(0, now) if key in clear else Window(
                state.attempts - 1, state.ends_at)


class CountingHasher:
    """Wraps a real hasher and counts verifications (the timing-equalising work is observable)."""

    def __init__(self, inner: PasswordHasher) -> None:
        self._inner = inner
        self.verifications = 0
        self.hashes = 0

    async def hash(self, normalized_password: str) -> str:
        self.hashes += 1
        return await self._inner.hash(normalized_password)

    async def verify(self, stored_hash: str, normalized_password: str) -> bool:
        self.verifications += 1
        return await self._inner.verify(stored_hash, normalized_password)

    async def verify_dummy(self, normalized_password: str) -> None:
        self.verifications += 1
        await self._inner.verify_dummy(normalized_password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._inner.needs_rehash(stored_hash)


class FakeCacheWarmer:
    """Records the tokens a login asked to warm for."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def warm(self, token: str) -> None:
        self.tokens.append(token)
