"""Opaque page tokens for ListTransactions: a keyset position (created_at, id) bound to one
account, with a checksum so that a token edited by hand is refused (INVALID_ARGUMENT) instead of
silently seeking somewhere else. A token grants nothing: ownership is checked on every call."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import uuid

from services.account.domain import PagePosition
from shared.errors import InvalidArgument

_FORMAT = struct.Struct(">B16sqq")  # format version, account uuid, created_us, entry id
_FORMAT_VERSION = 1
_CHECKSUM_BYTES = 8
_PERSONALISATION = b"bank.v1.txpage"


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECKSUM_BYTES, person=_PERSONALISATION).digest()


def encode_page_token(position: PagePosition) -> str:
    body = _FORMAT.pack(_FORMAT_VERSION, uuid.UUID(position.account_id).bytes,
                        position.created_us, position.entry_id)
    return base64.urlsafe_b64encode(body + _checksum(body)).rstrip(b"=").decode()


def decode_page_token(token: str, account_id: str) -> PagePosition:
    invalid = InvalidArgument("page_token is not a token this API returned for this account")
    if len(token) > 64:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(raw) != _FORMAT.size + _CHECKSUM_BYTES:
        raise invalid
    body, checksum = raw[: _FORMAT.size], raw[_FORMAT.size :]
    if _checksum(body) != checksum:
        raise invalid
    version, account, created_us, entry_id = _FORMAT.unpack(body)
    if version != _FORMAT_VERSION or str(uuid.UUID(bytes=account)) != account_id:
        raise invalid
    return PagePosition(account_id, created_us, entry_id)
