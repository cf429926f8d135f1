"""The route table: one Binding per google.api.http rule, built once at start-up.

Everything a request needs that can be known from the descriptors is computed here (message
classes, which fields come from the path, query or body, where the Idempotency-Key goes, whether
read-your-writes applies), so that the per-request path does no descriptor work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.api import http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from services.gateway.descriptors import Rpc, http_verb_and_path
from services.gateway.errors import HttpError
from services.gateway.path_template import PathTemplate, compile_template

IDEMPOTENCY_KEY_FIELD = "idempotency_key"
# Read-your-writes convention: a request with an `account_id` path variable and an int64
# `min_version` field gets the session's remembered version for that account; a reply with a
# `source_balance` (account_id + version) records one.
MIN_VERSION_FIELD = "min_version"
ACCOUNT_FIELD = "account_id"
WRITE_RECORD_FIELD = "source_balance"
_MAX_QUERY_DEPTH = 3


@dataclass(frozen=True)
class QueryField:
    path: tuple[str, ...]  # proto field names from the request message down
    repeated: bool
    field: FieldDescriptor


@dataclass(frozen=True)
class Binding:
    rpc: Rpc
    http_method: str
    path: PathTemplate
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    response_body: str
    request_class: type[Message]
    response_class: type[Message]
    # Query parameter names accepted (proto and JSON spellings, dotted for nested fields).
    query_fields: dict[str, QueryField] = field(repr=False)
    # True when every path variable is a top-level string field (set with setattr, no parsing).
    simple_path: bool = False
    idempotency_key_field: str | None = None
    read_your_writes: bool = False
    records_write: bool = False

    @property
    def route_label(self) -> str:
        return f"{self.http_method} {self.path.template}"

    @property
    def public(self) -> bool:
        return self.rpc.public


class RouteTable:
    def __init__(self, bindings: Iterable[Binding]) -> None:
        self.bindings = sorted(bindings, key=lambda b: b.path.specificity, reverse=True)
        self._by_method: dict[str, list[Binding]] = {}
        for binding in self.bindings:
            self._by_method.setdefault(binding.http_method, []).append(binding)

    def match(self, http_method: str, raw_path: str) -> tuple[Binding, dict[str, str]]:
        for binding in self._by_method.get(http_method, ()):
            params = binding.path.match(raw_path)
            if params is not None:
                return binding, params
        allowed = sorted(
            b.http_method for b in self.bindings if b.path.regex.fullmatch(raw_path)
        )
        if allowed:
            raise HttpError(405, grpc.StatusCode.UNIMPLEMENTED,
                            f"method {http_method} is not allowed here",
                            headers=[(b"allow", ", ".join(allowed).encode())])
        raise HttpError(404, grpc.StatusCode.NOT_FOUND, f"no route for {raw_path[:200]}")


def build_route_table(rpcs: Iterable[Rpc]) -> RouteTable:
    bindings: list[Binding] = []
    seen: set[tuple[str, str]] = set()
    for rpc in rpcs:
        if rpc.internal:
            continue  # never exposed, whatever annotations it carries
        for rule in rpc.http_rules:
            binding = _binding(rpc, rule)
            key = (binding.http_method, binding.path.regex.pattern)
            if key in seen:
                raise ValueError(f"two RPCs bind {binding.route_label}")
            seen.add(key)
            bindings.append(binding)
    return RouteTable(bindings)


def _binding(rpc: Rpc, rule: http_pb2.HttpRule) -> Binding:
    verb, template = http_verb_and_path(rule)
    path = compile_template(template)
    request = rpc.method.input_type
    for variable in path.variables:
        _resolve(request, variable.split("."), f"{rpc.full_method} path variable")
    if rule.body not in ("", "*"):
        _resolve(request, [rule.body], f"{rpc.full_method} body")
    if rule.response_body:
        _resolve(rpc.method.output_type, [rule.response_body], f"{rpc.full_method} response")
    bound = {v.split(".")[0] for v in path.variables}
    query = {} if rule.body == "*" else _query_fields(request, bound | {rule.body})
    fields = request.fields_by_name
    min_version = fields.get(MIN_VERSION_FIELD)
    record = rpc.method.output_type.fields_by_name.get(WRITE_RECORD_FIELD)
    idempotency = fields.get(IDEMPOTENCY_KEY_FIELD)
    return Binding(
        rpc=rpc,
        http_method=verb,
        path=path,
        body=rule.body,
        response_body=rule.response_body,
        request_class=GetMessageClass(request),
        response_class=GetMessageClass(rpc.method.output_type),
        query_fields=query,
        simple_path=all(
            "." not in v and fields[v].type == FieldDescriptor.TYPE_STRING
            and not _is_repeated(fields[v])
            for v in path.variables
        ),
        idempotency_key_field=(
            IDEMPOTENCY_KEY_FIELD
            if idempotency is not None and idempotency.type == FieldDescriptor.TYPE_STRING
            else None
        ),
        read_your_writes=(
            min_version is not None and min_version.type == FieldDescriptor.TYPE_INT64
            and ACCOUNT_FIELD in path.variables
        ),
        records_write=(
            not rpc.idempotent  # a write: reads of it (GetTransfer) add nothing new
            and record is not None and record.message_type is not None
            and {ACCOUNT_FIELD, "version"} <= set(record.message_type.fields_by_name)
        ),
    )


def _resolve(message: Descriptor, names: list[str], what: str) -> FieldDescriptor:
    current: Descriptor | None = message
    found: FieldDescriptor | None = None
    for name in names:
        if current is None or name not in current.fields_by_name:
            raise ValueError(f"{what} names unknown field {'.'.join(names)!r}")
        found = current.fields_by_name[name]
        current = found.message_type
    assert found is not None
    return found


def _is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def _query_fields(message: Descriptor, exclude: set[str]) -> dict[str, QueryField]:
    """Scalar and enum fields reachable from the request (not bound elsewhere) -> query names."""
    out: dict[str, QueryField] = {}

    def walk(desc: Descriptor, proto_path: tuple[str, ...], json_path: tuple[str, ...],
             depth: int) -> None:
        for fd in desc.fields:
            if not proto_path and fd.name in exclude:
                continue
            if fd.message_type is not None:
                is_map = fd.message_type.GetOptions().map_entry
                if depth < _MAX_QUERY_DEPTH and not _is_repeated(fd) and not is_map \
                        and fd.message_type.full_name.startswith("bank."):
                    walk(fd.message_type, (*proto_path, fd.name), (*json_path, fd.json_name),
                         depth + 1)
                continue
            query_field = QueryField((*proto_path, fd.name), _is_repeated(fd), fd)
            out[".".join((*proto_path, fd.name))] = query_field
            out[".".join((*json_path, fd.json_name))] = query_field

    walk(message, (), (), 0)
    return out
