"""HTTP request -> request message, reply message -> JSON, by the proto3 JSON mapping.

Client input is only ever reported as a 400 with the reason: malformed JSON, unknown fields (in
the body or the query), values of the wrong type, duplicated singular query parameters.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.gateway.errors import bad_request
from services.gateway.routes import Binding

_MAX_ERROR_TEXT = 300


def build_request(
    binding: Binding, path_params: dict[str, str], query_string: bytes, body: bytes
) -> Message:
    if binding.simple_path and not query_string and not body and binding.body != "*":
        # The hot path (GET /v1/accounts/{account_id}/balance): no JSON work at all.
        message = binding.request_class()
        for name, value in path_params.items():
            setattr(message, name, value)
        return message
    document: dict[str, Any] = {}
    if binding.body:
        parsed = parse_json(body) if body else ({} if binding.body == "*" else None)
        if binding.body == "*":
            if not isinstance(parsed, dict):
                raise bad_request("the request body must be a JSON object")
            document = parsed
        elif parsed is not None:
            document[binding.body] = parsed
    if query_string:
        _merge_query(binding, query_string, document)
    for variable, value in path_params.items():
        _put_path_variable(binding, document, variable, value)
    message = binding.request_class()
    try:
        json_format.ParseDict(document, message)
    except Exception as err:  # ParseError and the odd TypeError on hostile shapes: input errors
        raise bad_request(f"invalid request: {_short(str(err))}") from None
    return message


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request("the request body is not valid JSON") from None


def reply_json(binding: Binding, reply: Message) -> bytes:
    target: Any = getattr(reply, binding.response_body) if binding.response_body else reply
    if isinstance(target, Message):
        target = json_format.MessageToDict(target, always_print_fields_with_no_presence=True)
    return json.dumps(target, separators=(",", ":"), ensure_ascii=False).encode()


def _merge_query(binding: Binding, query_string: bytes, document: dict[str, Any]) -> None:
    if binding.body == "*":
        raise bad_request("this route takes its fields in the JSON body, not the query string")
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True,
                          errors="strict", max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("the query string is not valid UTF-8 or has too many fields") from None
    for name, value in pairs:
        spec = binding.query_fields.get(name)
        if spec is None:
            raise bad_request(f"unknown query parameter {_short(name)!r}")
        target = document
        for part in spec.path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise bad_request(f"query parameter {name!r} conflicts with the body")
            target = child
        last = spec.path[-1]
        if spec.repeated:
            target.setdefault(last, []).append(value)
        elif last in target:
            raise bad_request(f"query parameter {_short(name)!r} is given more than once")
        else:
            target[last] = value


def _put_path_variable(binding: Binding, document: dict[str, Any], variable: str,
                       value: str) -> None:
    """Path variables win over the body: the URL names the resource being acted on."""
    names = variable.split(".")
    target = document
    descriptor: Descriptor | None = binding.rpc.method.input_type
    for name in names[:-1]:
        assert descriptor is not None  # routes.py checked the path at start-up
        json_name = descriptor.fields_by_name[name].json_name
        child = target.pop(json_name, None) if json_name != name else None
        child = target.get(name, child)
        if not isinstance(child, dict):
            child = {}
        target[name] = child
        target = child
        descriptor = descriptor.fields_by_name[name].message_type
    last = names[-1]
    assert descriptor is not None
    json_name = descriptor.fields_by_name[last].json_name
    target.pop(json_name, None)
    target[last] = value


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."

