"""What the use cases need from the outside world. The PostgreSQL and Redis adapters implement
these, and so do the in-memory fakes beside them (services/transfer/adapters/fakes.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.transfer.domain import OutboxEvent, Transfer, TransferCommand, TransferOutcome


class TransferRepository(Protocol):
    async def execute(
        self, command: TransferCommand, from_partition: int, to_partition: int
    ) -> TransferOutcome:
        """Run the whole transfer (idempotency, locks, checks, ledger, outbox) and commit."""
        ...

    async def get(self, user_id: str, transfer_id: str) -> Transfer | None: ...

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Transfer]:
        """Newest first; `after` is the (created_at, transfer_id) of the previous page's last."""
        ...


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        """Publish what it can, each event at most once (one already out is not sent again);
        return the outbox ids that are now published, by this call or an earlier one. Never
        raises."""
        ...


class ClaimedOutboxBatch(Protocol):
    events: Sequence[OutboxEvent]

    async def mark_published(self, outbox_ids: Sequence[int]) -> None: ...


class OutboxStore(Protocol):
    async def mark_published(self, outbox_ids: Sequence[int]) -> None: ...

    def claim_unpublished(
        self, min_age_s: float, limit: int
    ) -> AbstractAsyncContextManager[ClaimedOutboxBatch]:
        """Lock (SKIP LOCKED) up to `limit` unpublished rows older than `min_age_s` for the
        duration of the context, so that several relays share the work."""
        ...

    async def backlog(self, min_age_s: float) -> int:
        """Unconfirmed rows older than `min_age_s`: what the relay has to deliver."""
        ...


class TransferRetentionStore(Protocol):
    async def delete_confirmed_outbox(self, older_than_s: float, limit: int) -> int:
        """Confirmed outbox rows made more than `older_than_s` ago (at most `limit`)."""
        ...

    async def delete_rejections(self, older_than_s: float, limit: int) -> int:
        """Stored rejections older than `older_than_s`: their idempotency keys are free again."""
        ...


class ReadYourWritesFloors(Protocol):
    async def remember_writes(self, user_id: str, versions: Mapping[str, int]) -> None:
        """Every session of the user reads at least these account versions from now on (for a
        while). Best effort, bounded in time; never raises."""
        ...


@dataclass(frozen=True)
class TreasuryParties:
    """Who a treasury movement involves: the customer account's owner, and the settlement
    account of the currency (owned by the bank's treasury user)."""

    account_owner: str
    settlement_account: str
    treasury_user: str


class TreasuryLedger(TransferRepository, Protocol):
    async def treasury_parties(self, account_id: str, currency: str) -> TreasuryParties | None:
        """None when the account does not exist; a settlement account of '' when the currency
        has none."""
        ...
