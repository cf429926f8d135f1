"""The password policy (each rule named in its message) and argon2id hashing."""

from __future__ import annotations

import pytest

from services.auth.adapters.password_hasher import (
    Argon2Params,
    Argon2PasswordHasher,
    hasher_from_settings,
)
from services.auth.domain import (
    MAX_PASSWORD_LENGTH,
    WeakPassword,
    check_password_length,
    check_password_strength,
)
from shared.config import Settings
from shared.errors import InvalidArgument

CHEAP = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("", "is required"),
        ("Short1!", "at least 12 characters"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), f"at most {MAX_PASSWORD_LENGTH} characters"),
        ("abcdefghijklmnop", "too easy to guess: Sequences"),
        ("1234567890123", "too easy to guess"),
        ("aaaaaaaaaaaa1111", "too easy to guess: Repeats"),
        ("Password1234", "too easy to guess"),
        ("qwertyuiop123", "too easy to guess"),
        ("iloveyou12345", "too easy to guess"),
        ("my-alice.w-2024!", "name of your email"),
        ("wonderalice1", "too easy to guess"),  # her own name, reversed, and a digit
    ],
)
def test_weak_passwords_are_refused_naming_the_rule(password: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_password_strength(password, email="alice.w@example.com", name="Alice Wonder")
    assert rule in refused.value.message


def test_policy_errors_are_invalid_argument_subclasses() -> None:
    with pytest.raises(WeakPassword):
        check_password_strength("Short1!")
    assert issubclass(WeakPassword, InvalidArgument)


@pytest.mark.parametrize(
    "password",
    ["Tr0ub4dor&3xyz", "glacier violet umbrella 42", "ünïcödé-Pässwörd", "𝔰𝔢𝔠𝔯𝔢𝔱 phrase 99",
     "alllowercaseletterswithoutrules", "123 987 456 bluebird"],
)
def test_reasonable_passwords_pass(password: str) -> None:
    assert check_password_strength(password, email="bob@example.com")


def test_no_composition_rules() -> None:
    """ASVS 2.1.9: a long phrase of lower-case letters is fine; no "one digit, one symbol"."""
    assert check_password_strength("lantern orchard pebble sky")


def test_passwords_are_nfkc_normalised() -> None:
    composed, decomposed = "Caf\u00e9-latte-2024", "Cafe\u0301-latte-2024"
    assert check_password_length(composed) == check_password_length(decomposed)


def test_login_length_bounds_do_not_apply_the_strength_rules() -> None:
    assert check_password_length("short") == "short"
    with pytest.raises(InvalidArgument, match="at most 128"):
        check_password_length("y" * 129)


async def test_hash_verify_and_mismatch() -> None:
    hasher = Argon2PasswordHasher(CHEAP)
    stored = await hasher.hash("Tr0ub4dor&3xyz")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "Tr0ub4dor&3xyz")
    assert not await hasher.verify(stored, "Tr0ub4dor&3xyZ")


async def test_a_non_argon2_stored_value_never_matches() -> None:
    hasher = Argon2PasswordHasher(CHEAP)
    for stored in ("!", "", "$argon2id$garbage", "plain-text-password"):
        assert not await hasher.verify(stored, "plain-text-password")
        assert not hasher.needs_rehash(stored)


async def test_rehash_is_needed_when_the_parameters_change() -> None:
    old = Argon2PasswordHasher(CHEAP)
    new = Argon2PasswordHasher(Argon2Params(time_cost=2, memory_kib=16, parallelism=1))
    stored = await old.hash("Tr0ub4dor&3xyz")
    assert not old.needs_rehash(stored)
    assert new.needs_rehash(stored)
    assert await new.verify(stored, "Tr0ub4dor&3xyz")  # old hashes still verify


def test_production_defaults_follow_rfc_9106() -> None:
    settings = Settings(database_url="postgresql://x/y", redis_nodes="127.0.0.1:1")
    assert Argon2Params.from_settings(settings) == Argon2Params(3, 65536, 4)
    assert hasher_from_settings(settings) is not None
