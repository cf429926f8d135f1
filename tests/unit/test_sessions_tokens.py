"""Token parsing and the signed cache entry format: pure functions, no servers."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import Unauthenticated
from shared.sessions import (
    REVOKED,
    SessionEntrySigner,
    hash_secret,
    parse_token,
    recheck_interval_for,
    secret_matches,
    session_key,
)

USER, SESSION = str(uuid.uuid4()), str(uuid.uuid4())
SECRET = "A" * 43


def test_a_well_formed_token_parses() -> None:
    parsed = parse_token(f"{USER}.{SESSION}.{SECRET}")
    assert (parsed.user_id, parsed.session_id, parsed.secret) == (USER, SESSION, SECRET)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        f"{USER}.{SESSION}",
        f"{USER}.{SESSION}.",
        f"{USER}.{SESSION}.{SECRET}.extra",
        f"{USER.upper()}.{SESSION}.{SECRET}",
        f"{USER.replace('-', '')}.{SESSION}.{SECRET}",
        f"not-a-uuid.{SESSION}.{SECRET}",
        f"{USER}.{SESSION}.{'A' * 42}",
        f"{USER}.{SESSION}.{'A' * 44}",
        f"{USER}.{SESSION}.{'A' * 42}=",
        f"{USER}.{SESSION}.{'A' * 42}\u00e9",
        "x" * 10_000,
        "\x00" * 50,
    ],
)
def test_malformed_tokens_are_unauthenticated_with_one_message(token: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        parse_token(token)
    assert refused.value.message == "session token is invalid or expired"


def test_secret_comparison() -> None:
    stored = hash_secret(SECRET)
    assert secret_matches(stored, SECRET)
    assert secret_matches(stored.encode(), SECRET)
    assert not secret_matches(stored, "B" * 43)
    assert not secret_matches(b"\xff\xfe", SECRET)


KEY = "k" * 32


def test_key_and_entry_formats() -> None:
    assert session_key(USER, SESSION) == f"session:{{{USER}}}:{SESSION}"
    signer = SessionEntrySigner(KEY)
    stored = hash_secret(SECRET)
    entry = signer.encode(stored, 1_700_000_060, 1_700_000_000)
    assert entry.startswith(b"v2|" + stored.encode() + b"|1700000060|1700000000|")
    decoded = signer.decode(entry)
    assert decoded is not None
    assert (decoded.secret_hash, decoded.checked_at, decoded.created_at) == (
        stored, 1_700_000_060, 1_700_000_000)


@pytest.mark.parametrize("value", [
    REVOKED, b"", b"short|1", b"v2|" + b"a" * 64 + b"|1|2",
    hash_secret(SECRET).encode() + b"|1700000000",  # the unsigned format of earlier releases
])
def test_anything_else_is_not_an_entry(value: bytes) -> None:
    assert SessionEntrySigner(KEY).decode(value) is None


def test_an_entry_written_without_the_key_is_refused() -> None:
    """Someone who can write to Redis but lacks the key cannot make a session."""
    forged = SessionEntrySigner("another-key-" + "x" * 32).encode(hash_secret(SECRET), 1, 1)
    assert SessionEntrySigner(KEY).decode(forged) is None
    tampered = bytearray(SessionEntrySigner(KEY).encode(hash_secret(SECRET), 1, 1))
    tampered[70] = ord("9") if tampered[70] != ord("9") else ord("8")  # the checked time
    assert SessionEntrySigner(KEY).decode(bytes(tampered)) is None


def test_the_signing_key_must_be_long() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        SessionEntrySigner("short")


def test_recheck_interval() -> None:
    assert recheck_interval_for(900) == 60
    assert recheck_interval_for(3) == 1
