"""Every text and numeric field of every RPC, sent bad values over gRPC to the real services with
a valid session: a control character in any text field is INVALID_ARGUMENT (HTTP 400 through the
edge), and no value of any field makes a service fail (no INTERNAL, UNKNOWN or other 5xx code).
The RPCs and fields come from the compiled descriptors, so a new RPC is covered without a test
change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from services.gateway.descriptors import load_catalog
from tests.e2e.conftest import Bank, Customer
from tests.support.sessions import open_session

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CONTROL_VALUES = ("\x00", "abc\x00def", "\x1b[2J", "line\nbreak", "\x7f")
INT_VALUES = (-1, -(2**31), 2**31 - 1)
INT64_VALUES = (-(2**63), 2**63 - 1)
# 5xx through the edge: what a request must never cause.
SERVER_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                   grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED}
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_UINT32}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_UINT64}


def leaf_fields(message: Descriptor, prefix: tuple[str, ...] = ()
                ) -> Iterator[tuple[tuple[str, ...], FieldDescriptor]]:
    for field in message.fields:
        path = (*prefix, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name.startswith("bank."):
                yield from leaf_fields(field.message_type, path)
        else:
            yield path, field


def request_with(method: MethodDescriptor, path: tuple[str, ...], value: Any) -> Message:
    request = GetMessageClass(method.input_type)()
    target: Any = request
    for name in path[:-1]:
        target = getattr(target, name)
    field = target.DESCRIPTOR.fields_by_name[path[-1]]
    if field.is_repeated:
        getattr(target, path[-1]).append(value)
    else:
        setattr(target, path[-1], value)
    return request


def cases() -> Iterator[tuple[str, MethodDescriptor, tuple[str, ...], Any]]:
    for rpc in load_catalog().rpcs:
        for path, field in leaf_fields(rpc.method.input_type):
            if field.type == FieldDescriptor.TYPE_STRING:
                values: tuple[Any, ...] = CONTROL_VALUES
            elif field.type in _INT32:
                values = INT_VALUES if field.type != FieldDescriptor.TYPE_UINT32 else (2**32 - 1,)
            elif field.type in _INT64:
                values = INT64_VALUES if field.type != FieldDescriptor.TYPE_UINT64 else (2**64 - 1,)
            else:
                continue
            for value in values:
                yield rpc.full_method, rpc.method, path, value


CASES = list(cases())


@pytest.fixture(scope="module")
async def caller(bank: Bank) -> AsyncIterator[tuple[Customer, str]]:
    customer = await bank.customer(deposit=10_000)
    yield customer, await open_session(bank.engine, customer.user_id)


@pytest.mark.parametrize(("full_method", "method", "path", "value"), CASES,
                         ids=[f"{m.rsplit('/', 1)[1]}.{'.'.join(p)}={v!r}"[:80]
                              for m, _, p, v in CASES])
async def test_bad_values_are_client_errors_never_server_failures(
    bank: Bank, caller: tuple[Customer, str], full_method: str, method: MethodDescriptor,
    path: tuple[str, ...], value: Any,
) -> None:
    customer, token = caller
    service = method.containing_service.name
    target = {"AccountService": bank.endpoints.account, "TransferService":
              bank.endpoints.transfer, "TreasuryService": bank.endpoints.transfer,
              "AuthService": bank.endpoints.auth}[service]
    request = request_with(method, path, value)
    # Fields the bad value does not occupy get plausible values, so the call reaches the rule
    # under test instead of failing on a missing field first.
    _fill_plausible(request, path, customer)
    response_class = GetMessageClass(method.output_type)
    async with grpc.aio.insecure_channel(target.removeprefix("ipv4:").split(",")[0]) as channel:
        call = channel.unary_unary(full_method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_class.FromString)
        metadata = (("authorization", f"Bearer {token}"),
                    ("idempotency-key", f"fuzz-{uuid.uuid4().hex}"))
        try:
            await call(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            assert err.code() not in SERVER_FAILURES, (err.code(), err.details())
            if isinstance(value, str):
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
                assert "must not contain control characters" in (err.details() or "")
            return
        assert not isinstance(value, str), "a control character was accepted"


def _fill_plausible(request: Message, bad_path: tuple[str, ...], customer: Customer) -> None:
    plausible = {"account_id": customer.account_id, "from_account_id": customer.account_id,
                 "to_account_id": str(uuid.uuid4()), "email": customer.email,
                 "password": "glacier violet umbrella 42", "currency": "EUR"}
    descriptor = request.DESCRIPTOR
    for name, value in plausible.items():
        if name in descriptor.fields_by_name and (name,) != bad_path and not getattr(request, name):
            setattr(request, name, value)
    if "amount" in descriptor.fields_by_name and bad_path[0] != "amount":
        request.amount.minor_units = 1  # type: ignore[attr-defined]
        request.amount.currency = "EUR"  # type: ignore[attr-defined]
