"""Signed caller assertions: how the gateway vouches for a user it has just authenticated.

The gateway checks the session (with the rate limit, in one Redis round trip) on every request.
Re-checking the same token in Redis in every service behind it would add a round trip per hop
to the hot path for no new information. Instead the gateway, as an explicit service identity,
sends `x-bank-caller: <user_id>.<session_id>.<expiry ms>.<HMAC-SHA256>` keyed with a secret
shared by the gateway and the services (BANK_CALLER_ASSERTION_KEY). The services' interceptor
verifies it in microseconds.

The assertion lives CALLER_ASSERTION_TTL_S: it is minted per request right after the session
check, so logout and revocation still take effect for the next request at once, and a captured
assertion is useless after that. Without the key configured, the gateway forwards the bearer
token and every service re-validates it (the defence-in-depth path internal callers use too).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from shared.auth_context import Caller
from shared.errors import Unauthenticated

CALLER_ASSERTION_HEADER = "x-bank-caller"
CALLER_ASSERTION_TTL_S = 2.0
_MAX_LENGTH = 200


class CallerAssertions:
    def __init__(self, key: str, ttl_s: float = CALLER_ASSERTION_TTL_S) -> None:
        if len(key) < 32:
            raise ValueError("BANK_CALLER_ASSERTION_KEY must be at least 32 characters")
        self._key = key.encode()
        self._ttl_ms = int(ttl_s * 1000)

    def _sign(self, claims: str) -> str:
        return hmac.new(self._key, claims.encode(), hashlib.sha256).hexdigest()

    def mint(self, caller: Caller, now: float | None = None) -> str:
        expiry_ms = int((time.time() if now is None else now) * 1000) + self._ttl_ms
        claims = f"{caller.user_id}.{caller.session_id}.{expiry_ms}"
        return f"{claims}.{self._sign(claims)}"

    def verify(self, value: str, now: float | None = None) -> Caller:
        invalid = Unauthenticated("caller assertion is invalid or expired")
        if len(value) > _MAX_LENGTH:
            raise invalid
        claims, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(claims)):
            raise invalid
        user_id, session_id, expiry = claims.split(".")  # signed by us: well formed
        if int(expiry) < (time.time() if now is None else now) * 1000:
            raise invalid
        return Caller(user_id, session_id)
