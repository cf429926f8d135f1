"""Auth rules that need no I/O: what a valid email, name, currency and password are, and the
errors. The hashing is an adapter (adapters/password_hasher.py).

Passwords are NFKC-normalised before hashing and checking, so that the same password typed on
two keyboards (composed vs decomposed accents, full-width digits) is the same password
(NIST SP 800-63B, 5.1.1.2).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from zxcvbn import zxcvbn

from shared.errors import AlreadyExists, InvalidArgument, Unauthenticated
from shared.text_rules import normalize_free_text

MAX_EMAIL_LENGTH = 254  # RFC 5321's path limit
MAX_NAME_LENGTH = 200
DEFAULT_CURRENCY = "EUR"

# Pragmatic, not RFC 5322: one @, a dot-atom local part, a domain of letters, digits and hyphens
# with a dot. Quoted local parts and IP literals are legal but nobody banks with them.
_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
_CURRENCY = re.compile(r"[A-Z]{3}")
# One message for an unknown email and a wrong password: no user enumeration.
INVALID_CREDENTIALS_MESSAGE = "email or password is incorrect"


class InvalidCredentials(Unauthenticated):
    def __init__(self) -> None:
        super().__init__(INVALID_CREDENTIALS_MESSAGE)


class EmailAlreadyRegistered(AlreadyExists):
    def __init__(self) -> None:
        super().__init__("an account with this email already exists")


@dataclass(frozen=True)
class StoredCredentials:
    user_id: str
    email: str
    password_hash: str


@dataclass(frozen=True)
class Registration:
    user_id: str
    account_id: str


@dataclass(frozen=True)
class LoginRequest:
    email: str
    password: str
    client_address: str
    user_agent: str
    device_token: str = ""  # from an earlier login on this device (service_layer/device_tokens.py)


def normalize_email(raw: str) -> str:
    """Lower-cased and validated; raises InvalidArgument naming the rule."""
    email = raw.strip().lower()
    if not email:
        raise InvalidArgument("email is required")
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidArgument(f"email must be at most {MAX_EMAIL_LENGTH} characters")
    local_part = email.partition("@")[0]
    if not _EMAIL.fullmatch(email) or len(local_part) > 64:
        raise InvalidArgument("email is not a valid address (expected name@example.com)")
    return email


def normalize_name(raw: str) -> str:
    return normalize_free_text("name", raw, max_length=MAX_NAME_LENGTH, required=True)


def normalize_currency(raw: str) -> str:
    currency = raw.strip().upper() or DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(currency):
        raise InvalidArgument("currency must be a three-letter ISO 4217 code such as EUR")
    return currency


@dataclass(frozen=True)
class NewSession:
    token: str
    user_id: str
    session_id: str
    expires_at: float
    device_token: str = ""


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created_at: datetime
    last_used_at: datetime
    client_address: str
    user_agent: str


# The password policy, after OWASP ASVS 4.0.3 section 2.1: at least 12 characters (2.1.1), up to
# 128 (2.1.2), any characters, no composition rules (2.1.9), and refused when it is common or
# easy to guess (2.1.7): zxcvbn estimates the guesses an attacker needs, from frequency lists of
# leaked passwords, words, names, keyboard patterns, dates and repeats, and the user's own email
# and name; a score under 3 ("safely unguessable" starts at 10^8 guesses) is refused, with its
# feedback as the reason.

MIN_PASSWORD_LENGTH = 12
# argon2 pre-hashes any length cheaply, but an unbounded field is still a request-size and
# log-size hazard; 128 characters is far beyond any passphrase people type.
MAX_PASSWORD_LENGTH = 128
MIN_PASSWORD_SCORE = 3
# zxcvbn's matching grows with the length; past this many characters a password is long enough
# and the prefix decides.
_ESTIMATED_PREFIX = 64
_SITE_WORDS = ("cachebank", "bank", "banking")


class WeakPassword(InvalidArgument):
    """The password breaks a rule of the policy; the message names the rule."""


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def check_password_length(password: str, field: str = "password") -> str:
    """The bounds every password field obeys (login included); returns the normalised form."""
    if not password:
        raise InvalidArgument(f"{field} is required")
    normalized = normalize_password(password)
    if len(normalized) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(f"{field} must be at most {MAX_PASSWORD_LENGTH} characters")
    return normalized


def check_password_strength(password: str, *, email: str = "", name: str = "",
                            field: str = "password") -> str:
    """Raise WeakPassword naming the reason; returns the normalised password."""
    normalized = check_password_length(password, field)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"{field} must be at least {MIN_PASSWORD_LENGTH} characters")
    local_part = email.partition("@")[0].lower()
    if len(local_part) >= 4 and local_part in normalized.lower():
        raise WeakPassword(f"{field} must not contain the name of your email address")
    estimate = zxcvbn(normalized[:_ESTIMATED_PREFIX],
                      user_inputs=[email, local_part, *name.split(), *_SITE_WORDS])
    if estimate["score"] < MIN_PASSWORD_SCORE:
        reason = estimate["feedback"]["warning"] or "it would be easy to guess"
        raise WeakPassword(f"{field} is too easy to guess: {reason.rstrip('.')}. A few unrelated "
                           "words or a longer phrase make a strong password")
    return normalized


# Attempt counters' rules (service_layer/attempt_limits.py applies them to logins and
# registrations).
@dataclass(frozen=True)
class Window:
    """The stored state of one counter: attempts counted, and when the window ends (epoch s;
    an ended window counts nothing)."""

    attempts: int
    ends_at: float


@dataclass(frozen=True)
class FixedWindow:
    """At most `limit` attempts per window of `window_s`, which starts at its first attempt."""

    limit: int
    window_s: float

    def admit(self, state: Window, now: float) -> Window | float:
        """The state with this attempt counted, or the seconds to wait before one may go."""
        if state.ends_at <= now:
            return Window(1, now + self.window_s)
        if state.attempts < self.limit:
            return Window(state.attempts + 1, state.ends_at)
        return state.ends_at - now


@dataclass(frozen=True)
class RisingDelay:
    """`free` attempts at once; after n >= free attempts the next waits
    min(base_s * 2^(n - free), max_s) after the previous one. The counter is forgotten
    `window_s` after the last attempt (so its window ends then: ends_at - window_s is the
    previous attempt). A delay longer than window_s is cut to it."""

    free: int
    base_s: float
    max_s: float
    window_s: float

    def delay_after(self, attempts: int) -> float:
        if attempts < self.free:
            return 0.0
        # 2^60 already dwarfs any cap; bounding the exponent keeps the float finite.
        return min(self.base_s * 2.0 ** min(attempts - self.free, 60), self.max_s)

    def admit(self, state: Window, now: float) -> Window | float:
        if state.ends_at <= now:
            return Window(1, now + self.window_s)
        previous = state.ends_at - self.window_s
        ready_at = previous + self.delay_after(state.attempts)
        if now < ready_at:
            return ready_at - now
        return Window(state.attempts + 1, now + self.window_s)
