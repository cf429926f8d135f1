"""Applying a balance-changed event to the cache: the same compare-and-set as a fill.

The balance entry takes the event's balance (keeping the owner it was filled with); the recent
transactions cannot be derived from the event, so that entry becomes a tombstone at the event's
version, which rejects any fill read before the change. Both keys share the account's hash tag:
one Lua call.
"""

from __future__ import annotations

from services.account.adapters.cache_layout import (
    BALANCE,
    RECENT,
    balance_data,
    balance_key,
    recent_key,
)
from services.account.domain import BalanceChange
from services.account.service_layer.dependencies import CacheTtls
from shared.cache import KeyUpdate, UpdateMode, VersionedCache
from shared.cache.backend import WriteOutcome
from shared.cache.ttl import jittered_ttl_ms


class BalanceEventApplier:
    def __init__(self, cache: VersionedCache, ttls: CacheTtls) -> None:
        self._cache = cache
        self._ttls = ttls

    async def apply(self, change: BalanceChange) -> list[WriteOutcome]:
        """Raises `CacheUnavailable` when Redis cannot take it (the caller retries)."""
        ttls = self._ttls
        tombstone_ms = int(ttls.tombstone_s * 1000)
        return await self._cache.apply_version(
            change.version,
            [
                KeyUpdate(BALANCE, balance_key(change.account_id), UpdateMode.SET_DATA,
                          jittered_ttl_ms(ttls.balance_s, ttls.jitter),
                          balance_data(change.currency, change.minor_units), tombstone_ms),
                KeyUpdate(RECENT, recent_key(change.account_id), UpdateMode.TOMBSTONE,
                          jittered_ttl_ms(ttls.recent_s, ttls.jitter),
                          tombstone_ttl_ms=tombstone_ms),
            ],
        )
