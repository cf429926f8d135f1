"""Device tokens: what lets an owner's known device past the rising delay an attacker put on
their email (OWASP's "device cookies"), without I/O.

A successful login returns a device token; the client sends it with its next logins. The token
names the email (a hash), a random device id and when it was issued, under a MAC keyed from
BANK_SESSION_SIGNING_KEY. A login that presents a valid token for its email is not subject to
the email's rising delay (service_layer/attempt_limits.py): it counts against the device instead,
under the same rising delay, so a stolen token buys no more guesses than the email allows.
Without this, a guesser that fires each time the email's delay ends takes that moment before the
owner, again and again.

A token of another email, expired, or under another key (a rotation) is simply no token: the
login goes on without the exemption. Only a value that cannot be a token at all (its alphabet or
length) is INVALID_ARGUMENT, naming device_token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

from shared.errors import InvalidArgument

_FORMAT = struct.Struct(">B16s16sq")  # version, email digest, device id, issued at (epoch s)
_VERSION = 1
_MAC_BYTES = 16
_ALPHABET = re.compile(r"[A-Za-z0-9_-]{0,120}")


def check_device_token_format(token: str) -> None:
    if not _ALPHABET.fullmatch(token):
        raise InvalidArgument("device_token is not a token this API returned (send the one from"
                              " your last login unchanged, or none)")


@dataclass(frozen=True)
class DeviceTokens:
    key: bytes
    ttl_s: int

    def issue(self, email: str, now: float) -> str:
        body = _FORMAT.pack(_VERSION, _digest(email), secrets.token_bytes(16), int(now))
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode()

    def device_of(self, token: str, email: str, now: float) -> str | None:
        """The device id (hex) when `token` is a valid token of `email`, else None."""
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _FORMAT.size + _MAC_BYTES:
            return None
        body, mac = raw[:_FORMAT.size], raw[_FORMAT.size:]
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        version, email_digest, device, issued_at = _FORMAT.unpack(body)
        if version != _VERSION or not hmac.compare_digest(email_digest, _digest(email)):
            return None
        if not issued_at <= now < issued_at + self.ttl_s:
            return None
        return str(device.hex())

    def _mac(self, body: bytes) -> bytes:
        return hmac.digest(self.key, body, "sha256")[:_MAC_BYTES]


def _digest(email: str) -> bytes:
    return hashlib.sha256(email.encode()).digest()[:16]
