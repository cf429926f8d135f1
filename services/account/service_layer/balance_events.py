"""Applying a balance-changed event to the cache: the same compare-and-set as a fill.

The balance entry takes the event's balance (keeping the owner it was filled with). The recent
transactions take the event's ledger entry, but only if the cached list is at exactly the
previous version (it then lacks this entry and nothing else); from any other state the list would
skip an entry, so it becomes a tombstone at the event's version, which rejects any fill read
before the change. An event without its entry (published before migration 0003) tombstones the
list as well. Both keys share the account's hash tag: one Lua call.
"""

from __future__ import annotations

from services.account.domain import RECENT_TRANSACTIONS_LIMIT, BalanceChange
from services.account.service_layer.cache_layout import (
    BALANCE,
    RECENT,
    balance_data,
    balance_key,
    recent_insertion,
    recent_key,
)
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
        recent_ttl_ms = jittered_ttl_ms(ttls.recent_s, ttls.jitter)
        if change.entry is None:
            recent = KeyUpdate(RECENT, recent_key(change.account_id), UpdateMode.TOMBSTONE,
                               recent_ttl_ms, tombstone_ttl_ms=tombstone_ms)
        else:
            recent = KeyUpdate(RECENT, recent_key(change.account_id), UpdateMode.INSERT,
                               recent_ttl_ms, recent_insertion(change.currency, change.entry),
                               tombstone_ms, keep=RECENT_TRANSACTIONS_LIMIT)
        return await self._cache.apply_version(
            change.version,
            [
                KeyUpdate(BALANCE, balance_key(change.account_id), UpdateMode.SET_DATA,
                          jittered_ttl_ms(ttls.balance_s, ttls.jitter),
                          balance_data(change.currency, change.minor_units), tombstone_ms),
                recent,
            ],
        )
