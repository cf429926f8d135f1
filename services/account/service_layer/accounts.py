"""Account, history and loan use cases."""

from __future__ import annotations

from dataclasses import dataclass

from services.account.domain import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AccountDetails,
    LedgerEntry,
    PagePosition,
    UserLoans,
)
from services.account.service_layer.balances import not_found, parse_account_id
from services.account.service_layer.cache_layout import LOANS, UserLoansCodec, loans_key
from services.account.service_layer.dependencies import AccountReads
from services.account.service_layer.pagination import decode_page_token, encode_page_token
from shared.auth_context import Caller
from shared.cache import Read
from shared.errors import InvalidArgument

_LOANS_CODEC = UserLoansCodec()


@dataclass(frozen=True)
class HistoryPage:
    account_id: str
    currency: str
    entries: tuple[LedgerEntry, ...]
    next_page_token: str  # '' on the last page


async def get_account(reads: AccountReads, caller: Caller, raw_account_id: str) -> AccountDetails:
    account_id = parse_account_id(raw_account_id)
    account = await reads.reader.account(account_id)
    if account is None or account.owner_user_id != caller.user_id:
        raise not_found(account_id)
    return account


async def list_accounts(reads: AccountReads, caller: Caller) -> list[AccountDetails]:
    return await reads.reader.accounts_of(caller.user_id)


async def list_transactions(
    reads: AccountReads, caller: Caller, raw_account_id: str, page_size: int, page_token: str
) -> HistoryPage:
    """Newest first, keyset-paginated on (created_at, id): stable under concurrent inserts,
    and each page is an index range scan however deep the client pages."""
    account_id = parse_account_id(raw_account_id)
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_page_token(reads.page_tokens, page_token, account_id) if page_token else None
    page = await reads.reader.transactions_page(account_id, after, size)
    if page.owner_user_id != caller.user_id:
        raise not_found(account_id)
    token = ""
    if page.has_more and page.entries:
        last = page.entries[-1]
        token = encode_page_token(reads.page_tokens,
                                  PagePosition(account_id, last.created_us, last.entry_id))
    return HistoryPage(account_id, page.currency, page.entries, token)


async def list_loans(reads: AccountReads, caller: Caller) -> Read[UserLoans]:
    """An API-response cache (`api:{user}:loans`): the key is the caller's own, so a hit needs no
    ownership check beyond the key itself."""
    user_id = caller.user_id

    async def load() -> UserLoans:
        return await reads.reader.loans_of(user_id)

    read = await reads.cache.read(
        LOANS, loans_key(user_id), ttl_s=reads.ttls.api_s, codec=_LOANS_CODEC, load=load
    )
    if read.value is None or read.value.user_id != user_id:
        return Read(UserLoans(user_id, ()), read.from_cache)
    return read
