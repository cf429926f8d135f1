from __future__ import annotations

import pytest

from shared.auth_context import Caller
from shared.caller_assertion import CallerAssertions
from shared.errors import Unauthenticated

KEY = "k" * 32
CALLER = Caller("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")


def test_round_trip() -> None:
    assertions = CallerAssertions(KEY)
    assert assertions.verify(assertions.mint(CALLER)) == CALLER


def test_expired_assertion_is_refused() -> None:
    assertions = CallerAssertions(KEY, ttl_s=2.0)
    minted = assertions.mint(CALLER, now=1_000.0)
    assert assertions.verify(minted, now=1_001.9) == CALLER
    with pytest.raises(Unauthenticated):
        assertions.verify(minted, now=1_002.1)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.replace(CALLER.user_id, "33333333-3333-4333-8333-333333333333"),
        lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),
        lambda s: s.rsplit(".", 1)[0],
        lambda s: "",
        lambda s: "x" * 500,
        lambda s: "a.b.c.d.e",
    ],
)
def test_tampered_or_malformed_assertion_is_refused(tamper: object) -> None:
    assertions = CallerAssertions(KEY)
    value = tamper(assertions.mint(CALLER))  # type: ignore[operator]
    with pytest.raises(Unauthenticated):
        assertions.verify(value)


def test_other_key_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        CallerAssertions("o" * 32).verify(CallerAssertions(KEY).mint(CALLER))


def test_short_key_is_rejected_at_start_up() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        CallerAssertions("short")
