"""Thin gRPC servicer of TreasuryService: proto in, use case, proto out."""

from __future__ import annotations

import grpc
from bank.v1 import transfer_pb2, treasury_pb2, treasury_pb2_grpc

from services.transfer.entrypoints.grpc_servicer import transfer_to_proto
from services.transfer.service_layer.treasury import TreasuryService
from shared.auth_context import current_machine


class TreasuryServicer(treasury_pb2_grpc.TreasuryServiceServicer):
    def __init__(self, service: TreasuryService) -> None:
        self._service = service

    async def Deposit(self, request: treasury_pb2.TreasuryMovementRequest,
                      context: grpc.aio.ServicerContext) -> transfer_pb2.Transfer:
        return transfer_to_proto(await self._service.deposit(
            current_machine(), account_id=request.account_id,
            amount=request.amount.minor_units, currency=request.amount.currency,
            idempotency_key=request.idempotency_key, reference=request.reference))

    async def Withdraw(self, request: treasury_pb2.TreasuryMovementRequest,
                       context: grpc.aio.ServicerContext) -> transfer_pb2.Transfer:
        return transfer_to_proto(await self._service.withdraw(
            current_machine(), account_id=request.account_id,
            amount=request.amount.minor_units, currency=request.amount.currency,
            idempotency_key=request.idempotency_key, reference=request.reference))
