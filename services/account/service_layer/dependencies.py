"""What the read use cases take: the source of truth, the read-through cache and the TTLs."""

from __future__ import annotations

from dataclasses import dataclass

from services.account.service_layer.ports import AccountReader
from shared.cache import ReadThroughCache


@dataclass(frozen=True)
class CacheTtls:
    balance_s: float
    recent_s: float
    api_s: float
    jitter: float


@dataclass(frozen=True)
class AccountReads:
    reader: AccountReader
    cache: ReadThroughCache
    ttls: CacheTtls
