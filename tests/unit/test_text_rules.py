"""The text every request field may hold (shared/text_rules.py): no I/O."""

from __future__ import annotations

import pytest
from bank.v1 import auth_pb2, common_pb2, transfer_pb2

from shared.errors import InvalidArgument
from shared.text_rules import check_message_text, normalize_free_text


@pytest.mark.parametrize("bad", ["\x00", "a\x01b", "\x1b[31m", "\x7f", "\x85", "tab\there"])
def test_control_characters_in_any_field_are_refused_naming_it(bad: str) -> None:
    request = transfer_pb2.CreateTransferRequest(
        from_account_id="a", amount=common_pb2.Money(minor_units=1, currency="EU" + bad))
    with pytest.raises(InvalidArgument, match="amount.currency must not contain control"):
        check_message_text(request)
    with pytest.raises(InvalidArgument, match="password must not"):
        check_message_text(auth_pb2.LoginRequest(email="a@b.io", password="pw" + bad))


def test_ordinary_text_passes() -> None:
    check_message_text(transfer_pb2.CreateTransferRequest(
        description="Miete für März \u20ac 12,50 – 😀", idempotency_key="k-1"))


def test_free_text_is_nfc_and_refuses_invisible_formatting() -> None:
    assert normalize_free_text("name", " Zoe\u0308 ", max_length=10) == "Zo\u00eb"
    for sneaky in ("a\u202eb", "a\u2066b", "a\u200bb", "a\ufeffb", "a\u200db"):
        with pytest.raises(InvalidArgument, match="invisible format"):
            normalize_free_text("name", sneaky, max_length=10)
    with pytest.raises(InvalidArgument, match="at most 3"):
        normalize_free_text("name", "abcd", max_length=3)
    with pytest.raises(InvalidArgument, match="name is required"):
        normalize_free_text("name", "  ", max_length=3, required=True)
