"""Thin gRPC servicer: proto in, use case, proto out. No SQL or Redis here."""

from __future__ import annotations

import grpc
from bank.v1 import account_pb2, transfer_pb2, transfer_pb2_grpc

from services.transfer.domain import Transfer
from services.transfer.service_layer.transfers import TransferService
from shared.auth_context import current_caller
from shared.call_metadata import current_call_headers
from shared.errors import InvalidArgument
from shared.money import money_message


def transfer_to_proto(transfer: Transfer) -> transfer_pb2.Transfer:
    reply = transfer_pb2.Transfer(
        transfer_id=transfer.transfer_id,
        from_account_id=transfer.from_account_id,
        to_account_id=transfer.to_account_id,
        amount=money_message(transfer.amount, transfer.currency),
        status=transfer_pb2.TRANSFER_STATUS_COMPLETED,
        description=transfer.description,
        idempotency_key=transfer.idempotency_key,
    )
    reply.created_at.FromDatetime(transfer.created_at)
    balance = transfer.source_balance
    if balance is not None:
        reply.source_balance.CopyFrom(
            account_pb2.Balance(
                account_id=balance.account_id,
                balance=money_message(balance.minor_units, balance.currency),
                version=balance.version,
                source=account_pb2.READ_SOURCE_DATABASE,
            )
        )
    return reply


def idempotency_key(in_body: str) -> str:
    """The body's key, else the `Idempotency-Key` HTTP header (metadata through the edge);
    both present must agree, or the client would not know which one guards its retry."""
    in_header = current_call_headers().idempotency_key
    if in_header is None:
        return in_body
    if in_body and in_body != in_header:
        raise InvalidArgument("the Idempotency-Key header and the body's idempotencyKey differ")
    return in_header


class TransferServicer(transfer_pb2_grpc.TransferServiceServicer):
    def __init__(self, service: TransferService) -> None:
        self._service = service

    async def CreateTransfer(
        self, request: transfer_pb2.CreateTransferRequest, context: grpc.aio.ServicerContext
    ) -> transfer_pb2.Transfer:
        transfer = await self._service.create_transfer(
            current_caller(),
            from_account_id=request.from_account_id,
            to_account_id=request.to_account_id,
            amount=request.amount.minor_units,
            currency=request.amount.currency,
            idempotency_key=idempotency_key(request.idempotency_key),
            description=request.description,
        )
        return transfer_to_proto(transfer)

    async def GetTransfer(
        self, request: transfer_pb2.GetTransferRequest, context: grpc.aio.ServicerContext
    ) -> transfer_pb2.Transfer:
        transfer = await self._service.get_transfer(current_caller(), request.transfer_id)
        return transfer_to_proto(transfer)

    async def ListTransfers(
        self, request: transfer_pb2.ListTransfersRequest, context: grpc.aio.ServicerContext
    ) -> transfer_pb2.ListTransfersResponse:
        page = await self._service.list_transfers(
            current_caller(), request.page_size, request.page_token
        )
        return transfer_pb2.ListTransfersResponse(
            transfers=[transfer_to_proto(t) for t in page.transfers],
            next_page_token=page.next_page_token,
        )
