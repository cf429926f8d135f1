"""Reading what the client sent: the few headers the gateway uses, the client address, the bearer
token, the request id, and a size-limited JSON body. Every rejection here is a clear 4xx."""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import grpc

from services.gateway.errors import HttpError, bad_request, unauthenticated

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_WANTED = frozenset({
    b"authorization", b"content-type", b"content-length", b"x-forwarded-for", b"x-request-id",
    b"idempotency-key", b"user-agent",
})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_VISIBLE_ASCII = re.compile(r"[!-~]{1,128}")
_TOKEN = re.compile(r"[!-~]{1,300}")
_PRINTABLE_ASCII = re.compile(r"[ -~]{0,300}")


class ClientDisconnected(Exception):
    """The client went away before sending its whole body: nobody is left to answer."""


@dataclass(slots=True)
class RequestHeaders:
    values: dict[bytes, bytes]

    @classmethod
    def parse(cls, raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        values: dict[bytes, bytes] = {}
        for name, value in raw:
            if name in _WANTED:
                # Repeated X-Forwarded-For headers form one list (RFC 9110 field combination).
                values[name] = values[name] + b"," + value if name in values else value
        return cls(values)

    def text(self, name: bytes) -> str | None:
        value = self.values.get(name)
        return value.decode("latin-1") if value is not None else None


class RequestIds:
    """Unique ids without a system call per request (uuid4 reads os.urandom each time): a random
    prefix per process and a counter. Behind Envoy the id usually arrives with the request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


def request_id(headers: RequestHeaders, new_id: Callable[[], str]) -> str:
    """The client's (or Envoy's) x-request-id when it is a sane token, else a new one."""
    given = headers.text(b"x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else new_id()


def client_address(scope: MutableMapping[str, Any], headers: RequestHeaders,
                   trusted_hops: int) -> str:
    """The address `trusted_hops` entries from the right of X-Forwarded-For (the one our own
    proxy appended), else the TCP peer. Entries further left are the client's to invent."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    forwarded = headers.text(b"x-forwarded-for")
    if not forwarded or trusted_hops <= 0:
        return peer
    entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
    if len(entries) < trusted_hops:
        return peer
    try:
        return str(ipaddress.ip_address(entries[-trusted_hops]))
    except ValueError:
        return peer


def bearer_token(headers: RequestHeaders) -> str:
    value = headers.text(b"authorization")
    if value is None:
        raise unauthenticated("this route needs a session: send 'Authorization: Bearer <token>'")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        # Only visible ASCII: anything else is no token of ours, and could not travel as gRPC
        # metadata anyway.
        raise unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token


def idempotency_key(headers: RequestHeaders) -> str | None:
    value = headers.text(b"idempotency-key")
    if value is None:
        return None
    if not _VISIBLE_ASCII.fullmatch(value):
        raise bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters")
    return value


def user_agent(headers: RequestHeaders) -> str | None:
    """Only what gRPC metadata can carry (printable ASCII), cut to a sane length."""
    value = headers.text(b"user-agent")
    if value is None:
        return None
    value = value[:300]
    return value if _PRINTABLE_ASCII.fullmatch(value) else None


async def read_json_body(receive: Receive, headers: RequestHeaders, max_bytes: int) -> bytes:
    """The whole body, refused early (413) when Content-Length says it is too big, and again if
    a chunked body grows past the limit; a non-empty body must be JSON (415)."""
    declared = headers.text(b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise bad_request("Content-Length is not a number")
        if int(declared) > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if body.strip():
        _require_json(headers)
        return body
    return b""


def _require_json(headers: RequestHeaders) -> None:
    content_type = headers.text(b"content-type")
    if content_type is None:
        raise _unsupported("a request body needs 'Content-Type: application/json'")
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise _unsupported(f"unsupported content type {media_type[:100]!r}: use application/json")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8"
        ):
            raise _unsupported("JSON bodies must be UTF-8")


def _too_large(max_bytes: int) -> HttpError:
    return HttpError(413, grpc.StatusCode.INVALID_ARGUMENT,
                     f"the request body is larger than {max_bytes} bytes")


def _unsupported(message: str) -> HttpError:
    return HttpError(415, grpc.StatusCode.INVALID_ARGUMENT, message)
