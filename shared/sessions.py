"""Sessions as every reader sees them: the token, the signed Redis entry, and the rules for
trusting it. The one module that says what a session entry means; the services' request gate
(`shared/request_gate.py`) and the auth service's session store both use it.

Token: "<user_id>.<session_id>.<secret>". The ids are not secret; they let a reader find the
Redis key `session:{<user_id>}:<session_id>` without a lookup table, and the user's hash tag puts
the session, the user's rate-limit window and the read-your-writes floors in one slot, so one
Lua call checks them all. The secret carries 256 random bits; only its SHA-256 is stored.

Redis entry: b"v2|<sha256(secret) hex>|<checked>|<created>|<signature>", where `checked` is the
epoch second PostgreSQL last confirmed the session, `created` its creation, and the signature an
HMAC-SHA256 over the rest under a key that is not in Redis (`BANK_SESSION_SIGNING_KEY`): an
entry written straight into Redis by someone who can reach it, without the key, is refused. The
TTL is the idle timeout, slid on each use after the secret matched. A revoked session's key holds
the tombstone b"revoked"; valid entries are only written where no tombstone is.

The rules, the same for every reader:
- an entry whose `checked` is older than `recheck_interval_for(ttl)` is not trusted: PostgreSQL
  re-confirms the session (one UPDATE that also refreshes last_used_at), so a revocation whose
  tombstone a Redis failover lost takes effect within that interval whatever Redis kept;
- a session ends `absolute_ttl_s` after its creation however active it is (12 h by default);
- an entry this code cannot read or verify (another format, a bad signature) is a miss, and
  PostgreSQL decides.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from shared.errors import Unauthenticated

REVOKED = b"revoked"
ENTRY_FORMAT = b"v2"
# PostgreSQL re-confirms a session at most this often; a reader without Redis may therefore end
# a session up to this much earlier than its sliding TTL (one UPDATE per request would put the
# session check back on the database).
PG_TOUCH_INTERVAL_S = 60
MIN_SIGNING_KEY_LENGTH = 32
INVALID_SESSION_MESSAGE = "session token is invalid or expired"
_MAX_TOKEN_LENGTH = 200
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    user_id: str
    session_id: str
    secret: str

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


@dataclass(frozen=True, slots=True)
class SessionEntry:
    secret_hash: str  # hex
    checked_at: int  # epoch s of the last PostgreSQL confirmation
    created_at: int  # epoch s


def session_key(user_id: str, session_id: str) -> str:
    return f"session:{{{user_id}}}:{session_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def invalid_session() -> Unauthenticated:
    return Unauthenticated(INVALID_SESSION_MESSAGE)


def parse_token(token: str) -> ParsedToken:
    """Reject malformed tokens before any I/O, with one message that reveals nothing."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise invalid_session()
    parts = token.split(".")
    if len(parts) != 3 or not _SECRET_PATTERN.fullmatch(parts[2]):
        raise invalid_session()
    # Only the canonical form (what login hands out): one session, one token spelling.
    if not (_CANONICAL_UUID.fullmatch(parts[0]) and _CANONICAL_UUID.fullmatch(parts[1])):
        raise invalid_session()
    return ParsedToken(parts[0], parts[1], parts[2])


def secret_matches(stored_hash_hex: str | bytes, secret: str) -> bool:
    stored = stored_hash_hex if isinstance(stored_hash_hex, bytes) else stored_hash_hex.encode()
    return hmac.compare_digest(stored, hash_secret(secret).encode())


def recheck_interval_for(ttl_s: float) -> float:
    """How old (seconds since PostgreSQL last confirmed it) an entry may be before a reader
    must have PostgreSQL re-confirm the session (see the module docstring)."""
    return min(float(PG_TOUCH_INTERVAL_S), ttl_s / 3)


class SessionEntrySigner:
    """Encodes and verifies session entries under the signing key (HMAC-SHA256)."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_SIGNING_KEY_LENGTH:
            raise ValueError(
                f"BANK_SESSION_SIGNING_KEY must be at least {MIN_SIGNING_KEY_LENGTH} characters"
            )
        self._key = key.encode()

    def _signature(self, body: bytes) -> bytes:
        # hmac.digest is the one-shot C path: a third of hmac.new(...).hexdigest() here, and it
        # runs on every request.
        return hmac.digest(self._key, body, "sha256").hex().encode()

    def encode(self, secret_hash: str, checked_at: int, created_at: int) -> bytes:
        body = b"v2|%s|%d|%d" % (secret_hash.encode(), checked_at, created_at)
        return body + b"|" + self._signature(body)

    def decode(self, value: bytes) -> SessionEntry | None:
        """The entry, or None when it is a tombstone, not in this format, or not signed by us."""
        body, _, signature = value.rpartition(b"|")
        parts = body.split(b"|")
        if len(parts) != 4 or parts[0] != ENTRY_FORMAT or len(signature) != 64:
            return None
        if not hmac.compare_digest(signature, self._signature(body)):
            return None  # also rejects any body we did not write: the signature covers it
        try:
            return SessionEntry(parts[1].decode(), int(parts[2]), int(parts[3]))
        except ValueError:
            return None


def derived_key(signing_key: str, label: str) -> bytes:
    """A key for another MAC, derived from BANK_SESSION_SIGNING_KEY under its own label (page
    tokens, device tokens): one secret to deploy and rotate, and MACs of different kinds never
    coincide."""
    return hmac.digest(signing_key.encode(), label.encode(), "sha256")
