"""The one page-token format (shared/page_tokens.py): opaque, bound to its list and its scope,
and INVALID_ARGUMENT for anything this API did not hand out."""

from __future__ import annotations

import grpc
import pytest

from shared.errors import InvalidArgument
from shared.page_tokens import PageTokens

TOKENS = PageTokens("test.list", "qq")


def test_a_token_round_trips_its_position() -> None:
    token = TOKENS.encode("scope-1", 1_700_000_000_123_456, 987)
    assert TOKENS.decode(token, "scope-1") == (1_700_000_000_123_456, 987)
    assert "=" not in token and "1700000000123456" not in token


@pytest.mark.parametrize("bad", ["", "not-base64!", "A" * 200, "QUFB"])
def test_malformed_tokens_are_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.decode(bad, "scope-1")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in refused.value.message


def test_an_edited_token_is_refused() -> None:
    token = TOKENS.encode("scope-1", 5, 6)
    for position in range(len(token) - 1):  # the last character also holds padding bits
        edited = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1:]
        with pytest.raises(InvalidArgument):
            TOKENS.decode(edited, "scope-1")


def test_a_token_is_bound_to_its_scope_and_its_list() -> None:
    token = TOKENS.encode("scope-1", 5, 6)
    with pytest.raises(InvalidArgument):
        TOKENS.decode(token, "scope-2")
    with pytest.raises(InvalidArgument):
        PageTokens("other.list", "qq").decode(token, "scope-1")
