"""Transfer validation and error mapping: no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from services.transfer.domain import (
    TransferCommand,
    parse_rejection,
    rejection_error,
    validate_transfer,
)
from services.transfer.service_layer.transfers import (
    decode_page_token,
    encode_page_token,
    transfer_page_tokens,
)
from shared.errors import BankError, InvalidArgument

A, B = str(uuid.uuid4()), str(uuid.uuid4())
USER = str(uuid.uuid4())
TOKENS = transfer_page_tokens(bytes(range(32)))


def valid(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = dict(
        user_id="u", idempotency_key="k-1", from_account_id=A, to_account_id=B, amount=100,
        currency="EUR", description="rent", max_amount=1000,
    )
    params.update(overrides)
    return params


def test_a_valid_request_becomes_a_command_with_canonical_ids() -> None:
    command = validate_transfer(**valid(from_account_id=A.upper()))
    assert command == TransferCommand("u", "k-1", A, B, 100, "EUR", "rent")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"idempotency_key": ""}, "idempotency_key is required"),
        ({"idempotency_key": "x" * 256}, "idempotency_key must be"),
        ({"idempotency_key": "bad\nkey"}, "idempotency_key must be"),
        ({"from_account_id": "nope"}, "from_account_id"),
        ({"to_account_id": ""}, "to_account_id"),
        ({"to_account_id": A}, "must differ"),
        ({"amount": 0}, "positive"),
        ({"amount": -5}, "positive"),
        ({"amount": 1001}, "maximum of 1000"),
        ({"currency": "eur"}, "ISO-4217"),
        ({"currency": ""}, "ISO-4217"),
        ({"description": "d" * 501}, "description"),
        ({"description": "rent\x00"}, "description must not contain control"),
        ({"description": "line\nbreak"}, "description must not contain control"),
        ({"description": "evil\u202egnp.exe"}, "invisible format"),
        ({"description": "zero\u200bwidth"}, "invisible format"),
        ({"description": "tab\there"}, "description must not contain control"),
        ({"description": "bell\x07"}, "description must not contain control"),
        ({"description": "c1\x85 next"}, "description must not contain control"),
    ],
)
def test_invalid_requests_are_rejected_before_any_io(overrides: dict[str, Any],
                                                      needle: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_transfer(**valid(**overrides))
    assert needle in caught.value.message
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_descriptions_are_stored_in_one_spelling() -> None:
    decomposed = "Cafe\u0301 "  # e + combining acute, trailing space
    assert validate_transfer(**valid(description=decomposed)).description == "Caf\u00e9"
def test_a_description_may_hold_any_printable_text() -> None:
    text = "Miete März – 🏠 ünïcödé, 50 % (ok) \"quoted\" ½ 北京"
    assert validate_transfer(**valid(description=text)).description == text


def test_the_maximum_itself_is_allowed() -> None:
    assert validate_transfer(**valid(amount=1000)).amount == 1000


@pytest.mark.parametrize(
    ("reason", "code", "needle"),
    [
        ("idempotency_key_reused", grpc.StatusCode.ALREADY_EXISTS, "another request"),
        ("source_not_found", grpc.StatusCode.NOT_FOUND, A),
        ("destination_not_found", grpc.StatusCode.NOT_FOUND, B),
        ("source_closed", grpc.StatusCode.FAILED_PRECONDITION, "closed"),
        ("destination_closed", grpc.StatusCode.FAILED_PRECONDITION, "closed"),
        ("source_currency_mismatch", grpc.StatusCode.FAILED_PRECONDITION, "EUR"),
        ("destination_currency_mismatch", grpc.StatusCode.FAILED_PRECONDITION, "EUR"),
        ("insufficient_funds", grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds"),
    ],
)
def test_each_stored_rejection_maps_to_one_status(reason: str, code: grpc.StatusCode,
                                                  needle: str) -> None:
    command = validate_transfer(**valid())
    error = rejection_error(parse_rejection(reason), command)
    assert error.code == code
    assert needle in error.message
    # A replay builds the same error from the same request.
    assert rejection_error(parse_rejection(reason), command).message == error.message


def test_an_unknown_reason_is_an_internal_error() -> None:
    with pytest.raises(BankError) as caught:
        parse_rejection("cosmic_rays")
    assert type(caught.value) is BankError
    assert caught.value.code == grpc.StatusCode.INTERNAL


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    when = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=UTC)
    token = encode_page_token(TOKENS, USER, when, A)
    assert decode_page_token(TOKENS, token, USER) == (when, A)
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for garbage in ("!!!", "bm90IGEgdG9rZW4", flipped, token[:-2], token + "AA", "A" * 200):
        with pytest.raises(InvalidArgument):
            decode_page_token(TOKENS, garbage, USER)
    with pytest.raises(InvalidArgument):
        decode_page_token(TOKENS, token, str(uuid.uuid4()))  # another user's cursor
