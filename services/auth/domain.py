"""Auth rules that need no I/O: what a valid email, name and currency are, and the errors.

The password policy lives in shared/passwords.py beside the hasher (one place for both).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from shared.errors import AlreadyExists, InvalidArgument, Unauthenticated

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
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidArgument("name must not contain control or invisible format characters")
    return name


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
