"""Token parsing and the cache entry format: pure functions, no servers."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import Unauthenticated
from shared.sessions import (
    REVOKED,
    decode_cached_entry,
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


def test_key_and_entry_formats_match_docs_decisions() -> None:
    assert session_key(USER, SESSION) == f"session:{{{USER}}}:{SESSION}"
    stored = hash_secret(SECRET).encode()
    assert decode_cached_entry(stored + b"|1700000000") == (stored, 1700000000.0)
    assert decode_cached_entry(REVOKED) is None
    assert decode_cached_entry(b"short|1") is None
    assert decode_cached_entry(stored + b"|not-a-number") is None


def test_recheck_interval() -> None:
    assert recheck_interval_for(900) == 60
    assert recheck_interval_for(3) == 1
