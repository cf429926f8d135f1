"""What Envoy answers by itself, shaped like every other error: google.rpc.Status JSON
`{"code": <gRPC code number>, "message": ..., "details": []}`, and the headers every reply
carries.

Local replies are Envoy's own answers: a path no route knows (404), a known path with a method
it does not serve (405), a body the transcoder cannot read (400) or that is too large (413), no
healthy replica (503), an upstream that does not answer in time (504). Replies transcoded from a
service's gRPC status are not local: the transcoder makes their body from the status itself.
"""

from __future__ import annotations

from typing import Any

# HTTP status of a local reply -> the gRPC code its body names (the inverse of the transcoder's
# gRPC -> HTTP table, for the statuses Envoy makes itself).
LOCAL_REPLY_CODES: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT: malformed JSON, wrong types, unknown query parameters
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: no route
    405: 12,  # UNIMPLEMENTED: the path exists, the method does not
    408: 4,  # DEADLINE_EXCEEDED: the client did not send its request in time
    413: 3,  # INVALID_ARGUMENT: body over the limit
    415: 3,  # INVALID_ARGUMENT: body not application/json
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: headers too large
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE: the upstream connection broke
    503: 14,  # UNAVAILABLE: no healthy upstream, overload, circuit breaker
    504: 4,  # DEADLINE_EXCEEDED: the upstream did not answer in time
}
_UNKNOWN = 2

# Envoy's texts for 5xx can name connection internals ("reset reason: connection failure,
# transport failure reason: ..."): the client gets a fixed text and the request id instead.
_SERVER_MESSAGES: dict[int, str] = {
    500: "internal error",
    502: "the service is temporarily unavailable; retry later",
    503: "the service is temporarily unavailable; retry later",
    504: "the service did not answer in time",
}

# On every reply: upstream answers, direct responses and local replies alike.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
)


def header_options(headers: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """HeaderValueOption list that replaces any value an upstream set."""
    return [{"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in headers]


def _status_body(code: int, message: str) -> dict[str, Any]:
    return {
        "json_format": {"code": code, "message": message, "details": []},
        "content_type": "application/json",
    }


def _status_filter(status: int, op: str = "EQ") -> dict[str, Any]:
    return {"status_code_filter": {"comparison": {
        "op": op,
        "value": {"default_value": status, "runtime_key": f"gateway.local_reply.{status}"},
    }}}


def local_reply_config() -> dict[str, Any]:
    """One mapper per error status Envoy makes (the first that matches applies), then one for
    any other error status, so that no error is plain text. Successful direct responses (the
    OpenAPI document, the docs page) match none and keep their body."""
    mappers = []
    for status, code in LOCAL_REPLY_CODES.items():
        if status in _SERVER_MESSAGES:
            message = f"{_SERVER_MESSAGES[status]} (request id %REQ(X-REQUEST-ID)%)"
        else:
            message = "%LOCAL_REPLY_BODY%"
        mappers.append({
            "filter": _status_filter(status),
            "headers_to_add": header_options(SECURITY_HEADERS),
            "body_format_override": _status_body(code, message),
        })
    mappers.append({
        "filter": _status_filter(400, "GE"),
        "headers_to_add": header_options(SECURITY_HEADERS),
        "body_format_override": _status_body(_UNKNOWN, "%LOCAL_REPLY_BODY%"),
    })
    return {"mappers": mappers}
