"""Balance use cases."""

from __future__ import annotations

import uuid

from services.account.adapters.account_repository import AccountRepository
from services.account.domain import BalanceSnapshot
from shared.auth_context import Caller
from shared.errors import InvalidArgument, NotFound


def parse_account_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidArgument(f"account_id {raw[:64]!r} is not a valid account id") from None


async def get_balance(repo: AccountRepository, caller: Caller, account_id: str) -> BalanceSnapshot:
    snapshot = await repo.balance(parse_account_id(account_id))
    # Someone else's account answers exactly like a missing one: no existence oracle.
    if snapshot is None or snapshot.owner_user_id != caller.user_id:
        raise NotFound(f"account {account_id} not found")
    return snapshot
