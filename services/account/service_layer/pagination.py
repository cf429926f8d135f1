"""ListTransactions' page tokens (shared/page_tokens.py): a keyset position (created_at, id) bound
to one account."""

from __future__ import annotations

from services.account.domain import PagePosition
from shared.page_tokens import PageTokens


def transaction_page_tokens(key: bytes) -> PageTokens:
    return PageTokens("bank.v1.txpage", "qq", key)  # created_us, entry id


def encode_page_token(tokens: PageTokens, position: PagePosition) -> str:
    return tokens.encode(position.account_id, position.created_us, position.entry_id)


def decode_page_token(tokens: PageTokens, token: str, account_id: str) -> PagePosition:
    created_us, entry_id = tokens.decode(token, account_id)
    return PagePosition(account_id, created_us, entry_id)
