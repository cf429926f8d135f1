"""Transfer use cases: create (idempotent), get and list the caller's transfers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.transfer.domain import (
    TREASURY_KEY_PREFIX,
    Transfer,
    TransferNotFound,
    TransferOutcome,
    parse_id,
    rejection_error,
    validate_transfer,
)
from services.transfer.service_layer.event_dispatcher import EventDispatcher
from services.transfer.service_layer.ports import ReadYourWritesFloors, TransferRepository
from shared.auth_context import Caller
from shared.errors import InvalidArgument
from shared.events import decode_balance_changed, partition_of
from shared.page_tokens import INVALID_PAGE_TOKEN_MESSAGE, PageTokens

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# Called after commit and before the events are handed to the dispatcher. Production passes
# nothing; the crash test passes a hook that raises, to stand for a process dying right there.
AfterCommitHook = Callable[[TransferOutcome], None]


@dataclass(frozen=True)
class TransferPage:
    transfers: list[Transfer]
    next_page_token: str


class TransferService:
    def __init__(
        self,
        repository: TransferRepository,
        dispatcher: EventDispatcher,
        floors: ReadYourWritesFloors,
        *,
        max_amount: int,
        event_partitions: int,
        page_tokens: PageTokens,
        after_commit: AfterCommitHook | None = None,
    ) -> None:
        self._page_tokens = page_tokens
        self._repository = repository
        self._dispatcher = dispatcher
        self._floors = floors
        self._max_amount = max_amount
        self._partitions = event_partitions
        self._after_commit = after_commit

    async def create_transfer(
        self,
        caller: Caller,
        *,
        from_account_id: str,
        to_account_id: str,
        amount: int,
        currency: str,
        idempotency_key: str,
        description: str,
    ) -> Transfer:
        if idempotency_key.startswith(TREASURY_KEY_PREFIX):
            raise InvalidArgument(f"idempotency keys starting with {TREASURY_KEY_PREFIX!r} are "
                                  "reserved for the bank's own movements")
        command = validate_transfer(
            user_id=caller.user_id,
            idempotency_key=idempotency_key,
            from_account_id=from_account_id,
            to_account_id=to_account_id,
            amount=amount,
            currency=currency,
            description=description,
            max_amount=self._max_amount,
        )
        outcome = await self._repository.execute(
            command,
            partition_of(command.from_account_id, self._partitions),
            partition_of(command.to_account_id, self._partitions),
        )
        if outcome.rejection is not None:
            raise rejection_error(outcome.rejection, command)
        assert outcome.transfer is not None
        if self._after_commit is not None:
            self._after_commit(outcome)
        self._dispatcher.submit(outcome.events)
        await self._floors.remember_writes(caller.user_id, versions_written(outcome))
        return outcome.transfer

    async def get_transfer(self, caller: Caller, transfer_id: str) -> Transfer:
        canonical = parse_id(transfer_id, "transfer_id")
        transfer = await self._repository.get(caller.user_id, canonical)
        # Another user's transfer answers exactly like a missing one.
        if transfer is None:
            raise TransferNotFound(f"transfer {canonical} not found")
        return transfer

    async def list_transfers(self, caller: Caller, page_size: int, page_token: str) -> TransferPage:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = (decode_page_token(self._page_tokens, page_token, caller.user_id)
                 if page_token else None)
        # One extra row tells whether another page exists, without a count query.
        rows = await self._repository.list_for_user(caller.user_id, limit + 1, after)
        page, more = rows[:limit], len(rows) > limit
        token = ""
        if more:
            token = encode_page_token(self._page_tokens, caller.user_id, page[-1].created_at,
                                      page[-1].transfer_id)
        return TransferPage(page, token)


def versions_written(outcome: TransferOutcome) -> dict[str, int]:
    """The account versions a transfer produced: both accounts of a new transfer (from its
    events), the source of a replayed one. The caller's reads of either account, in any of its
    sessions, must show at least these (the destination may be the caller's own account too)."""
    versions: dict[str, int] = {}
    for event in outcome.events:
        changed = decode_balance_changed(event.payload)
        versions[changed.account_id] = max(changed.version, versions.get(changed.account_id, 0))
    source = outcome.transfer.source_balance if outcome.transfer is not None else None
    if source is not None:
        versions[source.account_id] = max(source.version, versions.get(source.account_id, 0))
    return versions


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def transfer_page_tokens(key: bytes) -> PageTokens:
    """ListTransfers' page tokens (shared/page_tokens.py): the keyset position (created_at, id)
    of the page's last transfer, bound to the user whose list it is."""
    return PageTokens("bank.v1.xferpage", "q16s", key)  # created_us, transfer uuid


def encode_page_token(tokens: PageTokens, user_id: str, created_at: datetime,
                      transfer_id: str) -> str:
    return tokens.encode(user_id, (created_at - _EPOCH) // _MICROSECOND,
                          uuid.UUID(transfer_id).bytes)


def decode_page_token(tokens: PageTokens, token: str, user_id: str) -> tuple[datetime, str]:
    created_us, transfer_id = tokens.decode(token, user_id)
    try:
        created_at = _EPOCH + created_us * _MICROSECOND
    except OverflowError:  # a forged position beyond the datetime range
        raise InvalidArgument(INVALID_PAGE_TOKEN_MESSAGE) from None
    return created_at, str(uuid.UUID(bytes=transfer_id))
