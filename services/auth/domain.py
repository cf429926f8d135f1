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


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created_at: datetime
    last_used_at: datetime
    client_address: str
    user_agent: str


# The password policy.

MIN_PASSWORD_LENGTH = 12
# argon2 pre-hashes any length cheaply, but an unbounded field is still a request-size and
# log-size hazard; 128 characters is far beyond any passphrase people type.
MAX_PASSWORD_LENGTH = 128
MIN_DISTINCT_CHARACTERS = 5

# Deliberately tiny: the length and variety rules already reject most of the classic lists; these
# are the well-known ones that pass them.
_COMMON_PASSWORDS = frozenset(
    {
        "password1234", "password12345", "password123456", "passw0rd1234", "p@ssw0rd1234",
        "p@ssword1234", "qwerty123456", "qwertyuiop12", "qwertyuiop123", "1q2w3e4r5t6y",
        "1qaz2wsx3edc", "abcdef123456", "abc123456789", "123456789abc", "iloveyou1234",
        "letmein12345", "welcome12345", "admin1234567", "changeme1234", "trustno11234",
        "football1234", "baseball1234", "monkey123456", "dragon123456", "sunshine1234",
        "princess1234", "master123456", "correcthorsebatterystaple",
        "correct horse battery staple",
    }
)


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


def _character_classes(password: str) -> int:
    classes = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),  # punctuation, spaces, symbols
    )
    return sum(classes)


def check_password_strength(password: str, *, email: str = "", field: str = "password") -> str:
    """Raise WeakPassword naming the first rule broken; returns the normalised password."""
    normalized = check_password_length(password, field)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"{field} must be at least {MIN_PASSWORD_LENGTH} characters")
    if _character_classes(normalized) < 2:
        raise WeakPassword(
            f"{field} must mix at least two kinds of characters "
            "(lower case, upper case, digits, spaces or symbols)"
        )
    if len(set(normalized.lower())) < MIN_DISTINCT_CHARACTERS:
        raise WeakPassword(f"{field} must contain at least {MIN_DISTINCT_CHARACTERS} different "
                           "characters")
    if normalized.lower() in _COMMON_PASSWORDS:
        raise WeakPassword(f"{field} is on the list of commonly used passwords")
    local_part = email.partition("@")[0].lower()
    if len(local_part) >= 4 and local_part in normalized.lower():
        raise WeakPassword(f"{field} must not contain the name of your email address")
    return normalized
