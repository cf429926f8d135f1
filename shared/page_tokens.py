"""Opaque page tokens for keyset-paginated lists (ListTransactions, ListTransfers).

A token is base64url (unpadded) of a format version, the keyset position of the page's last row
(fixed-size fields) and an 8-byte BLAKE2b checksum over both and the list's scope (the account or
the user the list belongs to), personalised per list. A token edited by hand, cut short, made for
another list or for another scope is refused with INVALID_ARGUMENT instead of silently seeking
somewhere else. A token grants nothing: ownership is checked on every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Any

from shared.errors import InvalidArgument

_FORMAT_VERSION = 1
_CHECKSUM_BYTES = 8
INVALID_PAGE_TOKEN_MESSAGE = (
    "page_token is not a token this API returned for this list (pass next_page_token unchanged)"
)


def _encoded_length(size: int) -> int:
    return len(base64.urlsafe_b64encode(bytes(size)).rstrip(b"="))


class PageTokens:
    """The tokens of one list. `list_name` (at most 16 bytes) personalises the checksum;
    `position` is the struct format of the position's fields, e.g. "qq"."""

    def __init__(self, list_name: str, position: str) -> None:
        self._person = list_name.encode()
        if len(self._person) > hashlib.blake2b.PERSON_SIZE:
            raise ValueError(f"list name {list_name!r} is longer than 16 bytes")
        self._body = struct.Struct(">B" + position)
        self._max_length = _encoded_length(self._body.size + _CHECKSUM_BYTES)

    def _checksum(self, body: bytes, scope: str) -> bytes:
        return hashlib.blake2b(body + scope.encode(), digest_size=_CHECKSUM_BYTES,
                               person=self._person).digest()

    def encode(self, scope: str, *position: Any) -> str:
        body = self._body.pack(_FORMAT_VERSION, *position)
        return base64.urlsafe_b64encode(body + self._checksum(body, scope)).rstrip(b"=").decode()

    def decode(self, token: str, scope: str) -> tuple[Any, ...]:
        """The position's fields, or InvalidArgument."""
        invalid = InvalidArgument(INVALID_PAGE_TOKEN_MESSAGE)
        if len(token) > self._max_length:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        if len(raw) != self._body.size + _CHECKSUM_BYTES:
            raise invalid
        body, checksum = raw[: self._body.size], raw[self._body.size :]
        if self._checksum(body, scope) != checksum:
            raise invalid
        version, *position = self._body.unpack(body)
        if version != _FORMAT_VERSION:
            raise invalid
        return tuple(position)
