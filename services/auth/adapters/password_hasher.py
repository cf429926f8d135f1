"""argon2id password hashing.

Hashing is CPU- and memory-bound (tens of milliseconds, 64 MiB by default), so it runs in
worker threads (argon2's C code releases the GIL), in two bounded pools (adapters/work_pool.py):
checks of a password (login, password change, the dummy check of an unknown email) in one, new
hashes (registration, password change, a rehash at login) in the other. A flood of
registrations therefore never delays a login, and a full pool answers UNAVAILABLE at once
instead of exhausting memory or queueing past the deadline. It hashes the normalised password
that the policy (services/auth/domain.py) returns.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.auth.adapters.work_pool import BoundedWorkPool
from shared.config import Settings


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

    def __init__(self, params: Argon2Params, checks: BoundedWorkPool | None = None,
                 new_hashes: BoundedWorkPool | None = None) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        self._checks = checks or BoundedWorkPool("login", 3, 64)
        self._new_hashes = new_hashes or BoundedWorkPool("new_password", 1, 8)
        self._dummy_hash: str | None = None

    async def hash(self, normalized_password: str) -> str:
        return await self._new_hashes.run(self._hasher.hash, normalized_password)

    async def verify(self, stored_hash: str, normalized_password: str) -> bool:
        """True when the password matches. A stored value that is not an argon2 hash (a disabled
        account holds "!") costs a dummy verification, so it answers in the usual time."""
        dummy = await self._dummy()
        return await self._checks.run(self._verify_sync, stored_hash, normalized_password, dummy)

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
            self._dummy_hash = await self._checks.run(self._hasher.hash, secrets.token_hex(16))
        return self._dummy_hash

    def close(self) -> None:
        self._checks.close()
        self._new_hashes.close()

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
    return Argon2PasswordHasher(
        Argon2Params.from_settings(settings),
        checks=BoundedWorkPool("login", settings.argon2_max_concurrent,
                               settings.argon2_login_queue),
        new_hashes=BoundedWorkPool("new_password", settings.argon2_new_password_concurrent,
                                   settings.argon2_new_password_queue),
    )
