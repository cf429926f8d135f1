"""The route table: one Binding per google.api.http rule of every exposed RPC.

The Envoy routes (envoy_routes.py) and the OpenAPI document (openapi.py) are both made from this
table, so the API that is served and the API that is documented cannot differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from google.api import http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.gateway.descriptors import Rpc, http_verb_and_path
from services.gateway.path_template import PathTemplate, compile_template

IDEMPOTENCY_KEY_FIELD = "idempotency_key"
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
    # Query parameter names the transcoder accepts (proto and JSON spellings, dotted for nested
    # fields); any other name is refused with a 400.
    query_fields: dict[str, QueryField] = field(repr=False)
    # The request has a string `idempotency_key` field: the Idempotency-Key header can fill it.
    idempotency_key_field: str | None = None

    @property
    def route_label(self) -> str:
        return f"{self.http_method} {self.path.template}"

    @property
    def public(self) -> bool:
        return self.rpc.public


class RouteTable:
    def __init__(self, bindings: Iterable[Binding]) -> None:
        # Most specific first: Envoy takes the first route that matches.
        self.bindings = sorted(bindings, key=lambda b: b.path.specificity, reverse=True)

    def methods_by_path(self) -> dict[str, list[str]]:
        """Path regex -> the HTTP methods bound to it (for 405 answers with an Allow header)."""
        out: dict[str, list[str]] = {}
        for binding in self.bindings:
            out.setdefault(binding.path.regex.pattern, []).append(binding.http_method)
        return {pattern: sorted(set(methods)) for pattern, methods in out.items()}

    def services(self) -> list[str]:
        """Full names of the gRPC services that have at least one route."""
        return sorted({b.rpc.service.full_name for b in self.bindings})


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
    idempotency = request.fields_by_name.get(IDEMPOTENCY_KEY_FIELD)
    return Binding(
        rpc=rpc,
        http_method=verb,
        path=path,
        body=rule.body,
        response_body=rule.response_body,
        query_fields=query,
        idempotency_key_field=(
            IDEMPOTENCY_KEY_FIELD
            if idempotency is not None and idempotency.type == FieldDescriptor.TYPE_STRING
            else None
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
