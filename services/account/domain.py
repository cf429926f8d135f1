"""Account read models. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BalanceSnapshot:
    """A balance as read at one account version; cache entries carry the same version."""

    account_id: str
    owner_user_id: str
    currency: str
    minor_units: int
    version: int
