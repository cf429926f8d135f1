"""Money as the services show it: integer minor units, ISO-4217 exponents, the bank.v1.Money
message."""

from __future__ import annotations

from bank.v1 import common_pb2

# Currencies whose minor unit is not 1/100. Everything else uses 2 decimals.
_EXPONENTS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3,
              "TND": 3}


def currency_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def format_minor_units(minor_units: int, currency: str) -> str:
    """12345 EUR -> '123.45'; exact integer arithmetic, never a float."""
    exponent = currency_exponent(currency)
    sign = "-" if minor_units < 0 else ""
    value = abs(minor_units)
    if exponent == 0:
        return f"{sign}{value}"
    major, minor = divmod(value, 10**exponent)
    return f"{sign}{major}.{minor:0{exponent}d}"


def money_message(minor_units: int, currency: str) -> common_pb2.Money:
    """The reply's Money, with its formatted decimal string."""
    return common_pb2.Money(minor_units=minor_units, currency=currency,
                            formatted=format_minor_units(minor_units, currency))
