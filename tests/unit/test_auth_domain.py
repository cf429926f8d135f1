"""Input rules of the auth service: email, name, currency."""

from __future__ import annotations

import pytest

from services.auth.domain import normalize_currency, normalize_email, normalize_name
from services.auth.service_layer.attempt_limits import (
    address_counter_key,
    email_counter_key,
    pair_counter_key,
)
from shared.errors import InvalidArgument


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Alice.Smith+bank@Example.COM ") == "alice.smith+bank@example.com"


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("", "required"),
        ("   ", "required"),
        ("a" * 250 + "@x.io", "at most 254"),
        ("no-at-sign", "not a valid address"),
        ("two@@example.com", "not a valid address"),
        ("a@localhost", "not a valid address"),
        ("spa ce@example.com", "not a valid address"),
        ("x" * 65 + "@example.com", "not a valid address"),
        ("nul\x00@example.com", "not a valid address"),
        (".dot@example.com", "not a valid address"),
    ],
)
def test_bad_emails_are_refused_naming_the_rule(raw: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rule):
        normalize_email(raw)


def test_names() -> None:
    assert normalize_name("  Zoë Müller ") == "Zoë Müller"
    with pytest.raises(InvalidArgument, match="required"):
        normalize_name(" ")
    with pytest.raises(InvalidArgument, match="at most 200"):
        normalize_name("n" * 201)
    with pytest.raises(InvalidArgument, match="control"):
        normalize_name("bad\u202ename")


def test_currency_defaults_to_eur_and_must_be_three_letters() -> None:
    assert normalize_currency("") == "EUR"
    assert normalize_currency("usd") == "USD"
    for bad in ("EURO", "E1R", "€"):
        with pytest.raises(InvalidArgument, match="ISO 4217"):
            normalize_currency(bad)


def test_limiter_keys_hide_the_email_and_group_ipv6_by_64() -> None:
    key = email_counter_key("alice@example.com")
    assert "alice" not in key and key.startswith("login-email:")
    assert address_counter_key("10.0.0.1") == "login-addr:10.0.0.1"
    assert address_counter_key("2001:db8:1:2::5") == address_counter_key("2001:db8:1:2:ff::1")
    assert address_counter_key("2001:db8:1:2::5") == "login-addr:2001:db8:1:2::/64"
    pair = pair_counter_key("alice@example.com", "2001:db8:1:2::5")
    assert "alice" not in pair and pair.endswith(":2001:db8:1:2::/64")
