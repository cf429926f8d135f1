"""gRPC status -> HTTP status, and error bodies shaped as google.rpc.Status JSON:
{"code": <gRPC code number>, "message": "...", "details": [...]}.

The table is grpc-gateway's (and Envoy's grpc_json_transcoder's), narrowed as the issue asks:
every code it does not name is a 500. OUT_OF_RANGE is kept at 400 because it is always about the
client's input, and the gateway never answers bad input with a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Upstream messages for these codes can carry internals (addresses, stack hints); the client gets
# a fixed text and the request id instead, and the log keeps the original.
_OPAQUE_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "the service is temporarily unavailable; retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time",
}

_ERROR_DETAIL_TYPES = error_details_pb2  # registers google.rpc.* detail types in the pool


def http_status_for(code: grpc.StatusCode) -> int:
    return GRPC_TO_HTTP.get(code, 500)


class HttpError(Exception):
    """An answer that is not a success: raised anywhere in the request path, rendered once."""

    def __init__(
        self,
        http_status: int,
        code: grpc.StatusCode,
        message: str,
        *,
        details: Sequence[dict[str, Any]] = (),
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = list(headers)

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.details)


def bad_request(message: str) -> HttpError:
    return HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, message)


def unauthenticated(message: str = "session token is invalid or expired") -> HttpError:
    return HttpError(401, grpc.StatusCode.UNAUTHENTICATED, message,
                     headers=[(b"www-authenticate", b'Bearer realm="bank"')])


def error_body(code: grpc.StatusCode, message: str,
               details: Sequence[dict[str, Any]] = ()) -> bytes:
    number = code.value[0]
    return json.dumps({"code": number, "message": message, "details": list(details)},
                      separators=(",", ":")).encode()


def from_rpc_error(err: grpc.aio.AioRpcError, request_id: str) -> HttpError:
    code = err.code()
    http_status = http_status_for(code)
    if code in _OPAQUE_MESSAGES:
        message = _OPAQUE_MESSAGES[code]
    elif http_status >= 500:
        message = f"internal error (request id {request_id})"
    else:
        message = err.details() or code.name.lower()
    headers: list[tuple[bytes, bytes]] = []
    details: list[dict[str, Any]] = []
    for key, value in err.trailing_metadata() or ():
        if key == "retry-after" and isinstance(value, str) and value.isdigit():
            headers.append((b"retry-after", value.encode()))
            details.append(retry_info(int(value)))
        elif key == "grpc-status-details-bin" and isinstance(value, bytes) and http_status < 500:
            details.extend(_status_details(value))
    return HttpError(http_status, code, message, details=details, headers=headers)


def retry_info(seconds: int) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}


def _status_details(raw: bytes) -> list[dict[str, Any]]:
    """Rich error details an upstream attached; those of unknown types are left out."""
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:
        return []
    out: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            out.append(json_format.MessageToDict(detail))
        except Exception:
            continue
    return out
