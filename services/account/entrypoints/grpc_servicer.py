"""Thin gRPC servicer: proto in, use case, proto out. No SQL or Redis here."""

from __future__ import annotations

import grpc
from bank.v1 import account_pb2, account_pb2_grpc, common_pb2

from services.account.adapters.account_repository import AccountRepository
from services.account.service_layer import balances
from shared.auth_context import current_caller
from shared.money import format_minor_units


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, repo: AccountRepository) -> None:
        self._repo = repo

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.Balance:
        snap = await balances.get_balance(self._repo, current_caller(), request.account_id)
        return account_pb2.Balance(
            account_id=snap.account_id,
            balance=common_pb2.Money(
                minor_units=snap.minor_units,
                currency=snap.currency,
                formatted=format_minor_units(snap.minor_units, snap.currency),
            ),
            version=snap.version,
            source=account_pb2.READ_SOURCE_DATABASE,
        )
