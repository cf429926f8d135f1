"""What the read use cases take: the source of truth, the read-through cache and the TTLs."""

from __future__ import annotations

from dataclasses import dataclass

from services.account.service_layer.ports import AccountReader
from shared.cache import ReadThroughCache
from shared.page_tokens import PageTokens


@dataclass(frozen=True)
class CacheTtls:
    balance_s: float
    recent_s: float
    api_s: float
    jitter: float
    # How long a tombstone must reject stale fills: longer than any database read that started
    # before the change can take (the statement timeout) plus the fill after it.
    tombstone_s: float = 15.0


@dataclass(frozen=True)
class AccountReads:
    reader: AccountReader
    cache: ReadThroughCache
    ttls: CacheTtls
    page_tokens: PageTokens  # ListTransactions' (service_layer/pagination.py)
