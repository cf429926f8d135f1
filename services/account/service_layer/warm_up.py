"""Warming a user's cache entries right after a login (the auth service calls WarmCache without
waiting for it), so that the first balance and recent-transactions reads of a visit are hits.

Without it, most misses are exactly those first reads: a user who comes back after the balance
TTL (60 s) finds nothing cached. The warm-up costs PostgreSQL nothing when the entries are
there, and otherwise one statement for all of the user's accounts, the read those first misses
would have made anyway:
1. the user's account ids come from `api:{user}:accounts` (filled by the warm-up itself, TTL
   api_ttl_s); with them, one round of GETs (one write per master) shows which balance and
   recent entries are missing or tombstoned;
2. if any is, or the ids are not cached, one statement loads every account's balance and newest
   entries in one snapshot (`AccountReader.snapshots_of`);
3. each missing entry is filled through the same compare-and-set as a read's fill, so a warm-up
   never overwrites a newer entry (an event that moved the account meanwhile has left either the
   newer value or a tombstone above the loaded version, and the fill is refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from services.account.domain import RECENT_TRANSACTIONS_LIMIT, AccountSnapshot, UserAccountIds
from services.account.service_layer.cache_layout import (
    ACCOUNTS,
    BALANCE,
    RECENT,
    BalanceCodec,
    RecentTransactionsCodec,
    UserAccountIdsCodec,
    accounts_key,
    balance_key,
    recent_key,
)
from services.account.service_layer.dependencies import AccountReads
from shared.auth_context import Caller
from shared.cache import CacheEntry
from shared.metrics import CACHE_WARMUPS

_IDS_CODEC = UserAccountIdsCodec()


@dataclass(frozen=True)
class WarmUp:
    accounts: int  # the caller's accounts looked at
    loaded: bool  # PostgreSQL was read
    filled: int  # entries written


def _missing(entry: CacheEntry | None) -> bool:
    return entry is None or entry.tombstone


def _keys(account_ids: tuple[str, ...]) -> list[str]:
    return [key for account in account_ids for key in (balance_key(account), recent_key(account))]


async def warm_caller_cache(reads: AccountReads, caller: Caller) -> WarmUp:
    cache = reads.cache
    user_id = caller.user_id
    if not cache.enabled:
        return WarmUp(0, False, 0)
    found = await cache.peek([accounts_key(user_id)])
    if found is None:  # Redis cannot take entries now: nothing to warm
        CACHE_WARMUPS.labels("unavailable").inc()
        return WarmUp(0, False, 0)
    ids_entry = found[0]
    if ids_entry is not None and not ids_entry.tombstone and ids_entry.owner == user_id:
        ids = _IDS_CODEC.from_entry(ids_entry).account_ids
        entries = await cache.peek(_keys(ids))
        if entries is not None and not any(_missing(e) for e in entries):
            CACHE_WARMUPS.labels("cached").inc()
            return WarmUp(len(ids), False, 0)

    snapshots = await reads.reader.snapshots_of(user_id, RECENT_TRANSACTIONS_LIMIT)
    ids = tuple(s.balance.account_id for s in snapshots)
    entries = await cache.peek(_keys(ids)) or [None] * (2 * len(ids))
    writes: list[Awaitable[bool]] = [
        cache.fill(ACCOUNTS, accounts_key(user_id), UserAccountIds(user_id, ids),
                   codec=_IDS_CODEC, ttl_s=reads.ttls.api_s)]
    for snapshot, (balance, recent) in zip(snapshots, zip(entries[::2], entries[1::2],
                                                          strict=True), strict=True):
        writes += _fills(reads, snapshot, fill_balance=_missing(balance),
                         fill_recent=_missing(recent))
    written = await asyncio.gather(*writes)
    CACHE_WARMUPS.labels("loaded").inc()
    return WarmUp(len(ids), True, sum(written[1:]))


def _fills(reads: AccountReads, snapshot: AccountSnapshot, *, fill_balance: bool,
           fill_recent: bool) -> list[Awaitable[bool]]:
    account_id = snapshot.balance.account_id
    out: list[Awaitable[bool]] = []
    if fill_balance:
        out.append(reads.cache.fill(BALANCE, balance_key(account_id), snapshot.balance,
                                    codec=BalanceCodec(account_id), ttl_s=reads.ttls.balance_s))
    if fill_recent:
        out.append(reads.cache.fill(RECENT, recent_key(account_id), snapshot.recent,
                                    codec=RecentTransactionsCodec(account_id),
                                    ttl_s=reads.ttls.recent_s))
    return out
