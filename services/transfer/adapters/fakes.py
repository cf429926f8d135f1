"""In-memory stand-ins for the PostgreSQL and Redis adapters, for unit tests of the use cases,
the dispatcher and the relay. They follow the same contracts (service_layer/ports.py); the real
rules (locks, constraints) are tested against PostgreSQL in tests/integration."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bank.v1 import common_pb2, events_pb2

from services.transfer.domain import (
    OutboxEvent,
    RejectionReason,
    SourceBalance,
    Transfer,
    TransferCommand,
    TransferOutcome,
)


@dataclass
class FakeAccount:
    owner_user_id: str
    currency: str = "EUR"
    balance: int = 0
    version: int = 1
    open: bool = True


def _event(account_id: str, account: FakeAccount) -> bytes:
    return events_pb2.BalanceChanged(
        account_id=account_id, version=account.version,
        balance=common_pb2.Money(minor_units=account.balance, currency=account.currency),
    ).SerializeToString()


@dataclass
class FakeReadYourWritesFloors:
    """The floors each user's reads must reach, as the request gate keeps them in Redis."""

    floors: dict[str, dict[str, int]] = field(default_factory=dict)

    async def remember_writes(self, user_id: str, versions: Mapping[str, int]) -> None:
        mine = self.floors.setdefault(user_id, {})
        for account_id, version in versions.items():
            mine[account_id] = max(version, mine.get(account_id, 0))


@dataclass
class FakeTransferRepository:
    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    rejections: dict[tuple[str, str], tuple[TransferCommand, RejectionReason]] = field(
        default_factory=dict
    )
    calls: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def execute(
        self, command: TransferCommand, from_partition: int, to_partition: int
    ) -> TransferOutcome:
        self.calls += 1
        key = (command.user_id, command.idempotency_key)
        for done in self.transfers:
            if (done.user_id, done.idempotency_key) == key:
                if _params(done) != _command_params(command):
                    return TransferOutcome(None, False, RejectionReason.IDEMPOTENCY_KEY_REUSED)
                return TransferOutcome(done, True, None)
        if key in self.rejections:
            stored, reason = self.rejections[key]
            same = _command_params(stored) == _command_params(command)
            return TransferOutcome(
                None, False, reason if same else RejectionReason.IDEMPOTENCY_KEY_REUSED
            )
        failed = self._check(command)
        if failed is not None:
            self.rejections[key] = (command, failed)
            return TransferOutcome(None, False, failed)
        source = self.accounts[command.from_account_id]
        destination = self.accounts[command.to_account_id]
        source.balance -= command.amount
        source.version += 1
        destination.balance += command.amount
        destination.version += 1
        transfer = Transfer(
            transfer_id=f"00000000-0000-4000-8000-{next(self._ids):012d}",
            user_id=command.user_id, from_account_id=command.from_account_id,
            to_account_id=command.to_account_id, amount=command.amount,
            currency=command.currency, description=command.description,
            idempotency_key=command.idempotency_key, created_at=datetime.now(UTC),
            source_balance=SourceBalance(command.from_account_id, source.balance,
                                         command.currency, source.version),
        )
        self.transfers.append(transfer)
        events = (
            OutboxEvent(next(self._ids), from_partition, _event(command.from_account_id, source)),
            OutboxEvent(next(self._ids), to_partition,
                        _event(command.to_account_id, destination)),
        )
        return TransferOutcome(transfer, False, None, events)

    def _check(self, command: TransferCommand) -> RejectionReason | None:
        source = self.accounts.get(command.from_account_id)
        destination = self.accounts.get(command.to_account_id)
        if source is None or source.owner_user_id != command.user_id:
            return RejectionReason.SOURCE_NOT_FOUND
        if destination is None:
            return RejectionReason.DESTINATION_NOT_FOUND
        if not source.open:
            return RejectionReason.SOURCE_CLOSED
        if not destination.open:
            return RejectionReason.DESTINATION_CLOSED
        if source.currency != command.currency:
            return RejectionReason.SOURCE_CURRENCY_MISMATCH
        if destination.currency != command.currency:
            return RejectionReason.DESTINATION_CURRENCY_MISMATCH
        if source.balance < command.amount:
            return RejectionReason.INSUFFICIENT_FUNDS
        return None

    async def get(self, user_id: str, transfer_id: str) -> Transfer | None:
        for transfer in self.transfers:
            if transfer.transfer_id == transfer_id and transfer.user_id == user_id:
                return transfer
        return None

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Transfer]:
        mine = sorted((t for t in self.transfers if t.user_id == user_id),
                      key=lambda t: (t.created_at, t.transfer_id), reverse=True)
        if after is not None:
            mine = [t for t in mine if (t.created_at, t.transfer_id) < after]
        return mine[:limit]


def _params(t: Transfer) -> tuple[str, str, int, str, str]:
    return (t.from_account_id, t.to_account_id, t.amount, t.currency, t.description)


def _command_params(c: TransferCommand) -> tuple[str, str, int, str, str]:
    return (c.from_account_id, c.to_account_id, c.amount, c.currency, c.description)


@dataclass
class FakeEventPublisher:
    """Records what it publishes, each outbox id once, as the publish script's published sets
    do; `failing = True` makes it refuse everything (Redis down)."""

    published: list[OutboxEvent] = field(default_factory=list)
    failing: bool = False

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if self.failing:
            return []
        out = {e.outbox_id for e in self.published}
        self.published.extend(e for e in events if e.outbox_id not in out)
        return [e.outbox_id for e in events]


@dataclass
class _FakeClaim:
    events: Sequence[OutboxEvent]
    store: FakeOutboxStore

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        await self.store.mark_published(outbox_ids)


@dataclass
class FakeOutboxStore:
    """`rows` are the unpublished outbox rows (all old enough for the relay)."""

    rows: list[OutboxEvent] = field(default_factory=list)
    marked: list[int] = field(default_factory=list)
    statements: int = 0  # UPDATEs a PostgreSQL store would have run
    failing: bool = False

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if self.failing:
            raise ConnectionError("PostgreSQL is unreachable")
        self.statements += 1
        self.marked.extend(outbox_ids)
        done = set(outbox_ids)
        self.rows = [r for r in self.rows if r.outbox_id not in done]

    @asynccontextmanager
    async def claim_unpublished(self, min_age_s: float, limit: int) -> AsyncIterator[_FakeClaim]:
        yield _FakeClaim(list(self.rows[:limit]), self)

    async def backlog(self, min_age_s: float) -> int:
        return len(self.rows)
