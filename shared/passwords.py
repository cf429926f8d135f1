"""Passwords: the minimum-strength policy and argon2id hashing.

Hashing is CPU- and memory-bound (tens of milliseconds, 64 MiB by default), so it runs in a
worker thread (argon2's C code releases the GIL) behind a semaphore: a flood of logins queues up
instead of exhausting memory or freezing the event loop.

Passwords are NFKC-normalised before hashing and checking, so that the same password typed on
two keyboards (composed vs decomposed accents, full-width digits) is the same password
(NIST SP 800-63B, 5.1.1.2).
"""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.config import Settings
from shared.errors import InvalidArgument

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


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int
    memory_kib: int
    parallelism: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Argon2Params:
        return cls(settings.argon2_time_cost, settings.argon2_memory_kib,
                   settings.argon2_parallelism)


class Argon2PasswordHasher:
    """argon2id hashing with rehash detection and a dummy verification for unknown users."""

    def __init__(self, params: Argon2Params, max_concurrent: int = 4) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(max(1, max_concurrent))
        self._dummy_hash: str | None = None

    async def hash(self, normalized_password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, normalized_password)

    async def verify(self, stored_hash: str, normalized_password: str) -> bool:
        """True when the password matches. A stored value that is not an argon2 hash (a disabled
        account holds "!") costs a dummy verification, so it answers in the usual time."""
        dummy = await self._dummy()
        async with self._slots:
            return await asyncio.to_thread(self._verify_sync, stored_hash, normalized_password,
                                           dummy)

    async def verify_dummy(self, normalized_password: str) -> None:
        """Spend one verification's time for an unknown email: the answer's timing must not tell
        a registered address from an unregistered one."""
        await self.verify(await self._dummy(), normalized_password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return False  # not an argon2 hash: nothing a login could rehash

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_hex(16))
        return self._dummy_hash

    def _verify_sync(self, stored_hash: str, password: str, dummy_hash: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError, ValueError):
            try:
                self._hasher.verify(dummy_hash, password)
            except VerificationError:
                pass
            return False


def hasher_from_settings(settings: Settings) -> Argon2PasswordHasher:
    return Argon2PasswordHasher(Argon2Params.from_settings(settings),
                                settings.argon2_max_concurrent)
