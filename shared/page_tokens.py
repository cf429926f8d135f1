"""Opaque page tokens for keyset-paginated lists (ListTransactions, ListTransfers).

A token is base64url (unpadded) of a format version, the keyset position of the page's last row
(fixed-size fields) and an 8-byte MAC over both and the list's scope (the account or the user the
list belongs to): keyed BLAKE2b, personalised per list. The key is a server secret, so a client
cannot make a token for a position of its choosing; an unkeyed checksum only caught typing
errors, anyone could compute it. A token edited by hand, cut short, made for another list or for
another scope is refused with INVALID_ARGUMENT instead of silently seeking somewhere else; so is
a position out of range (the MAC makes that a second line: a leaked key, a bug). A token grants
nothing: ownership is checked on every call.

The key is derived from BANK_SESSION_SIGNING_KEY (`page_token_key`) rather than read from a
second secret: every process that serves a list already requires that one, and a separate
derivation label keeps the two MACs apart (a page-token MAC is never a session entry's). Rotating
the signing key invalidates open page tokens, which clients recover from by listing again.

Positions: the first field is the row's creation time in microseconds since the epoch (both
lists are keyset-paginated on (created_at, id)); it must lie between 2000-01-01 and a day from
now. Every other integer field must be non-negative.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from typing import Any

from shared.config import Settings
from shared.errors import InvalidArgument
from shared.sessions import derived_key

_FORMAT_VERSION = 1
_CHECKSUM_BYTES = 8
_DERIVATION_LABEL = "cachebank page tokens v1"
# 2000-01-01T00:00:00Z: no row of this system is older.
MIN_POSITION_US = 946_684_800 * 1_000_000
# Replicas' clocks differ a little; a day is far beyond that and still refuses nonsense.
_FUTURE_SLACK_US = 86_400 * 1_000_000
INVALID_PAGE_TOKEN_MESSAGE = (
    "page_token is not a token this API returned for this list (pass next_page_token unchanged)"
)
OUT_OF_RANGE_MESSAGE = "page_token holds a position out of range (pass next_page_token unchanged)"


def page_token_key(settings: Settings) -> bytes:
    """The MAC key of page tokens, derived from BANK_SESSION_SIGNING_KEY (required)."""
    settings.require("session_signing_key")
    return derived_key(settings.session_signing_key, _DERIVATION_LABEL)


def _encoded_length(size: int) -> int:
    return len(base64.urlsafe_b64encode(bytes(size)).rstrip(b"="))


class PageTokens:
    """The tokens of one list. `list_name` (at most 16 bytes) personalises the MAC; `position`
    is the struct format of the position's fields, the first a timestamp in µs, e.g. "qq";
    `key` the server secret (`page_token_key`)."""

    def __init__(self, list_name: str, position: str, key: bytes) -> None:
        self._person = list_name.encode()
        if len(self._person) > hashlib.blake2b.PERSON_SIZE:
            raise ValueError(f"list name {list_name!r} is longer than 16 bytes")
        if not 16 <= len(key) <= hashlib.blake2b.MAX_KEY_SIZE:
            raise ValueError("a page token key has 16 to 64 bytes")
        self._key = key
        self._body = struct.Struct(">B" + position)
        self._max_length = _encoded_length(self._body.size + _CHECKSUM_BYTES)

    def _mac(self, body: bytes, scope: str) -> bytes:
        return hashlib.blake2b(body + scope.encode(), digest_size=_CHECKSUM_BYTES,
                               key=self._key, person=self._person).digest()

    def encode(self, scope: str, *position: Any) -> str:
        body = self._body.pack(_FORMAT_VERSION, *position)
        return base64.urlsafe_b64encode(body + self._mac(body, scope)).rstrip(b"=").decode()

    def decode(self, token: str, scope: str) -> tuple[Any, ...]:
        """The position's fields, or InvalidArgument naming page_token."""
        invalid = InvalidArgument(INVALID_PAGE_TOKEN_MESSAGE)
        if len(token) > self._max_length:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        if len(raw) != self._body.size + _CHECKSUM_BYTES:
            raise invalid
        body, mac = raw[: self._body.size], raw[self._body.size :]
        if not hmac.compare_digest(self._mac(body, scope), mac):
            raise invalid
        version, *position = self._body.unpack(body)
        if version != _FORMAT_VERSION:
            raise invalid
        check_position(position)
        return tuple(position)


def check_position(position: list[Any]) -> None:
    created_us = position[0]
    latest = int(time.time() * 1_000_000) + _FUTURE_SLACK_US
    if not MIN_POSITION_US <= created_us <= latest:
        raise InvalidArgument(OUT_OF_RANGE_MESSAGE)
    if any(isinstance(field, int) and field < 0 for field in position[1:]):
        raise InvalidArgument(OUT_OF_RANGE_MESSAGE)
