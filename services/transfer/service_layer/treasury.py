"""Treasury movements: money entering (Deposit) and leaving (Withdraw) the bank, made by a
machine credential with the method's scope. Each is an ordinary transfer against the currency's
settlement account (the same function, ledger entries, events and idempotency), so the sum over
all accounts stays zero and every rule of transfers holds.

A deposit runs as the treasury user (the settlement account's owner), a withdrawal as the
account's owner (whose balance must cover it). Their idempotency keys live in the reserved
"treasury:" namespace of that user, which customers' own keys may not use.
"""

from __future__ import annotations

from services.transfer.domain import (
    TREASURY_KEY_PREFIX,
    Transfer,
    parse_id,
    rejection_error,
    validate_transfer,
)
from services.transfer.service_layer.event_dispatcher import EventDispatcher
from services.transfer.service_layer.ports import TreasuryLedger
from shared.auth_context import MachineCaller
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.events import partition_of


class TreasuryService:
    def __init__(self, ledger: TreasuryLedger, dispatcher: EventDispatcher, *,
                 max_amount: int, event_partitions: int) -> None:
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._max_amount = max_amount
        self._partitions = event_partitions

    async def deposit(self, machine: MachineCaller, *, account_id: str, amount: int,
                      currency: str, idempotency_key: str, reference: str) -> Transfer:
        return await self._move(account_id, amount, currency, idempotency_key,
                                reference or "Deposit", into_account=True)

    async def withdraw(self, machine: MachineCaller, *, account_id: str, amount: int,
                       currency: str, idempotency_key: str, reference: str) -> Transfer:
        return await self._move(account_id, amount, currency, idempotency_key,
                                reference or "Withdrawal", into_account=False)

    async def _move(self, account_id: str, amount: int, currency: str, key: str,
                    description: str, *, into_account: bool) -> Transfer:
        account = parse_id(account_id, "account_id")
        if not key:
            raise InvalidArgument("idempotency_key is required (send a unique key per movement)")
        parties = await self._ledger.treasury_parties(account, currency)
        if parties is None:
            raise NotFound(f"account {account} not found")
        if not parties.settlement_account:
            raise FailedPrecondition(f"the bank holds no settlement account in {currency[:8]!r}")
        source, destination = account, parties.settlement_account
        user = parties.account_owner
        if into_account:
            source, destination, user = parties.settlement_account, account, parties.treasury_user
        command = validate_transfer(
            user_id=user, idempotency_key=TREASURY_KEY_PREFIX + key, from_account_id=source,
            to_account_id=destination, amount=amount, currency=currency,
            description=description, max_amount=self._max_amount,
        )
        outcome = await self._ledger.execute(
            command, partition_of(command.from_account_id, self._partitions),
            partition_of(command.to_account_id, self._partitions),
        )
        if outcome.rejection is not None:
            raise rejection_error(outcome.rejection, command)
        assert outcome.transfer is not None
        self._dispatcher.submit(outcome.events)
        return outcome.transfer
