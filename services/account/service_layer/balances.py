"""Balance and recent-transactions use cases: cache-aside reads of the caller's own accounts."""

from __future__ import annotations

from services.account.domain import (
    RECENT_TRANSACTIONS_LIMIT,
    BalanceSnapshot,
    RecentTransactions,
)
from services.account.service_layer.cache_layout import (
    BALANCE,
    RECENT,
    BalanceCodec,
    RecentTransactionsCodec,
    balance_key,
    recent_key,
)
from services.account.service_layer.dependencies import AccountReads
from shared.auth_context import Caller
from shared.cache import Read
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.identifiers import canonical_uuid


def parse_account_id(raw: str) -> str:
    """The canonical form of an account id, or InvalidArgument."""
    canonical = canonical_uuid(raw)
    if canonical is None:
        raise InvalidArgument(f"account_id {raw[:64]!r} is not a valid account id")
    return canonical


def prefetch_balance(reads: AccountReads, raw_account_id: str) -> None:
    """Send the balance's cache read ahead (it overlaps the session check); skipped for an id
    the read itself will refuse."""
    account_id = canonical_uuid(raw_account_id)
    if account_id is not None:
        reads.cache.prefetch(balance_key(account_id))


def prefetch_recent_transactions(reads: AccountReads, raw_account_id: str) -> None:
    account_id = canonical_uuid(raw_account_id)
    if account_id is not None:
        reads.cache.prefetch(recent_key(account_id))


def check_min_version(min_version: int) -> int:
    if min_version < 0:
        raise InvalidArgument("min_version must not be negative")
    return min_version


class VersionNotReached(FailedPrecondition):
    """`min_version` names a version the account has not reached: no transfer returned it, so
    waiting would not help (a client bug, or a version of another account)."""


def check_version_reached(account_id: str, version: int, min_version: int) -> None:
    """Called with PostgreSQL's current version (a read never returns less than `min_version`
    otherwise): an error, not a best effort, so the client cannot take an older balance for the
    one it asked for."""
    if version < min_version:
        raise VersionNotReached(
            f"min_version {min_version} is newer than account {account_id}'s current version"
            f" {version}: pass the version a transfer returned for this account")


def not_found(account_id: str) -> NotFound:
    # Someone else's account answers exactly like a missing one: no existence oracle.
    return NotFound(f"account {account_id} not found")


async def get_balance(
    reads: AccountReads, caller: Caller, raw_account_id: str, min_version: int = 0
) -> Read[BalanceSnapshot]:
    account_id = parse_account_id(raw_account_id)
    read = await reads.cache.read(
        BALANCE,
        balance_key(account_id),
        ttl_s=reads.ttls.balance_s,
        codec=BalanceCodec(account_id),
        load=lambda: reads.reader.balance(account_id),
        min_version=check_min_version(min_version),
        entity=account_id,
        wait_key=account_id,  # an event updates a cached balance in place: worth a short wait
        read_through=caller.floors_unknown,
        cacheable=lambda loaded: loaded.owner_user_id == caller.user_id,
    )
    if read.value is None or read.value.owner_user_id != caller.user_id:
        raise not_found(account_id)
    check_version_reached(account_id, read.value.version, min_version)
    return read


async def list_recent_transactions(
    reads: AccountReads, caller: Caller, raw_account_id: str, min_version: int = 0
) -> Read[RecentTransactions]:
    account_id = parse_account_id(raw_account_id)
    read = await reads.cache.read(
        RECENT,
        recent_key(account_id),
        ttl_s=reads.ttls.recent_s,
        codec=RecentTransactionsCodec(account_id),
        load=lambda: reads.reader.recent_transactions(account_id, RECENT_TRANSACTIONS_LIMIT),
        min_version=check_min_version(min_version),
        entity=account_id,
        read_through=caller.floors_unknown,
        cacheable=lambda loaded: loaded.owner_user_id == caller.user_id,
    )
    if read.value is None or read.value.owner_user_id != caller.user_id:
        raise not_found(account_id)
    check_version_reached(account_id, read.value.version, min_version)
    return read
