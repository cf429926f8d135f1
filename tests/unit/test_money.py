from __future__ import annotations

import pytest

from shared.money import format_minor_units, money_message


@pytest.mark.parametrize(
    ("units", "currency", "text"),
    [(12345, "EUR", "123.45"), (5, "EUR", "0.05"), (-250, "EUR", "-2.50"), (1000, "JPY", "1000"),
     (1234, "KWD", "1.234"), (9_223_372_036_854_775_807, "EUR", "92233720368547758.07")],
)
def test_formats_exactly(units: int, currency: str, text: str) -> None:
    assert format_minor_units(units, currency) == text


def test_the_money_message_carries_the_formatted_amount() -> None:
    message = money_message(-250, "EUR")
    assert (message.minor_units, message.currency, message.formatted) == (-250, "EUR", "-2.50")
