"""The OpenAPI 3 document, generated from the same route table and descriptors that Envoy's
routes come from, plus a small self-contained HTML page that lists it (no CDN: it works
offline). Envoy serves both (/openapi.json, /docs) from the files the bundle writes."""

from __future__ import annotations

import html
import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from services.gateway.routes import Binding, RouteTable

_F = FieldDescriptor
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_INT64: _INT64, _F.TYPE_SINT64: _INT64, _F.TYPE_SFIXED64: _INT64,
    _F.TYPE_UINT64: _UINT64, _F.TYPE_FIXED64: _UINT64,
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
}
_ERROR_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC code number, a message, and typed details.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object",
                                               "properties": {"@type": {"type": "string"}}}},
    },
    "required": ["code", "message", "details"],
}


API_DESCRIPTION = (
    "Generated from the protos' google.api.http annotations. JSON follows the proto3 JSON"
    " mapping: lowerCamelCase names (proto names are accepted too), int64 as strings, enum"
    " names, every field present in replies. Unknown fields in a request body are ignored, as"
    " proto3 JSON parsers, grpc-gateway and Google's APIs do; unknown query parameters are"
    " refused (400). Errors are google.rpc.Status JSON {code, message, details} with the"
    " standard HTTP status of the gRPC code; a body that is not application/json is refused"
    " (415), one over the size limit too (413)."
)


class _Schemas:
    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.components: dict[str, Any] = {"Status": _ERROR_SCHEMA}

    def message_ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder first: recursive messages
            self.components[message.full_name] = self.message_schema(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def message_schema(self, message: Descriptor, skip: frozenset[str] = frozenset()
                       ) -> dict[str, Any]:
        properties = {
            fd.json_name: self.field_schema(fd) for fd in message.fields if fd.name not in skip
        }
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  "additionalProperties": False}
        if message.full_name in self.comments:
            schema["description"] = self.comments[message.full_name]
        return schema

    def field_schema(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value = fd.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object",
                                      "additionalProperties": self.single(value)}
        elif fd.is_repeated:
            schema = {"type": "array", "items": self.single(fd)}
        else:
            schema = self.single(fd)
        description = self.comments.get(fd.full_name)
        if description and "$ref" not in schema:
            schema["description"] = description
        return schema

    def single(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.message_type is not None:
            return self.message_ref(fd.message_type)
        if fd.enum_type is not None:
            return self.enum_ref(fd.enum_type)
        return dict(_SCALARS[fd.type])

    def enum_ref(self, enum: EnumDescriptor) -> dict[str, Any]:
        if enum.full_name not in self.components:
            self.components[enum.full_name] = {"type": "string",
                                               "enum": [v.name for v in enum.values]}
        return {"$ref": f"#/components/schemas/{enum.full_name}"}


def build_openapi(table: RouteTable, comments: dict[str, str], *, title: str = "Bank API",
                  version: str = "v1") -> dict[str, Any]:
    schemas = _Schemas(comments)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for binding in sorted(table.bindings, key=lambda b: (b.path.template, b.http_method)):
        path = re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", binding.path.template)
        operation = _operation(binding, schemas)
        operation_id = f"{binding.rpc.service.name}_{binding.rpc.method.name}"
        suffix = 2
        while operation_id in operation_ids:
            operation_id = f"{binding.rpc.service.name}_{binding.rpc.method.name}_{suffix}"
            suffix += 1
        operation_ids.add(operation_id)
        operation["operationId"] = operation_id
        paths.setdefault(path, {})[binding.http_method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": API_DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "bearerFormat": "<user_id>.<session_id>.<secret> (from POST /v1/auth/login)"}},
            "responses": {"Error": {
                "description": "An error: google.rpc.Status as JSON",
                "content": {"application/json": {"schema": {"$ref":
                                                            "#/components/schemas/Status"}}}}},
        },
        "security": [{"bearerAuth": []}],
    }


def _operation(binding: Binding, schemas: _Schemas) -> dict[str, Any]:
    request = binding.rpc.method.input_type
    reply = binding.rpc.method.output_type
    parameters: list[dict[str, Any]] = []
    for variable in binding.path.variables:
        parameters.append({"name": variable, "in": "path", "required": True,
                           "schema": {"type": "string", "minLength": 1}})
    seen: set[tuple[str, ...]] = set()
    for spec in binding.query_fields.values():
        if spec.path in seen:
            continue
        seen.add(spec.path)
        json_name = ".".join(_json_path(request, spec.path))
        item = schemas.single(spec.field)
        parameters.append({
            "name": json_name, "in": "query", "required": False,
            "schema": {"type": "array", "items": item} if spec.repeated else item,
            **({"description": schemas.comments[spec.field.full_name]}
               if spec.field.full_name in schemas.comments else {}),
        })
    if binding.idempotency_key_field:
        parameters.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "Same key and same parameters: the stored result again.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128,
                       "pattern": "^[A-Za-z0-9._:-]+$"},
        })
    operation: dict[str, Any] = {
        "tags": [binding.rpc.service.name],
        "summary": binding.rpc.comment or binding.rpc.method.name,
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {
                "schema": _reply_schema(binding, reply, schemas)}}},
            "429": {"description": "Rate limited: see Retry-After and RateLimit",
                    "content": {"application/json": {"schema": {"$ref":
                                                                "#/components/schemas/Status"}}}},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
    if binding.body:
        operation["requestBody"] = {"required": False, "content": {
            "application/json": {"schema": _body_schema(binding, request, schemas)}}}
    if binding.public:
        operation["security"] = []
    return operation


def _body_schema(binding: Binding, request: Descriptor, schemas: _Schemas) -> dict[str, Any]:
    if binding.body != "*":
        return schemas.field_schema(request.fields_by_name[binding.body])
    bound = frozenset(v.split(".")[0] for v in binding.path.variables)
    if not bound:
        return schemas.message_ref(request)
    return schemas.message_schema(request, skip=bound)


def _reply_schema(binding: Binding, reply: Descriptor, schemas: _Schemas) -> dict[str, Any]:
    if binding.response_body:
        return schemas.field_schema(reply.fields_by_name[binding.response_body])
    return schemas.message_ref(reply)


def _json_path(message: Descriptor, proto_path: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    current: Descriptor | None = message
    for name in proto_path:
        assert current is not None
        fd = current.fields_by_name[name]
        names.append(fd.json_name)
        current = fd.message_type
    return names


def docs_page(document: dict[str, Any]) -> str:
    rows: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            auth = "public" if operation.get("security") == [] else "Bearer token"
            params = ", ".join(p["name"] for p in operation.get("parameters", []))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code>"
                f"</td><td>{html.escape(operation['summary'])}</td><td>{auth}</td>"
                f"<td>{html.escape(params)}</td></tr>"
            )
    title = html.escape(document["info"]["title"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>{title}</h1><p>JSON follows the proto3 JSON mapping (int64 as strings, enum names;"
        " unknown request fields are ignored). Errors are <code>{code, message, details}</code>."
        " Send "
        "<code>Authorization: Bearer &lt;token&gt;</code> from <code>POST /v1/auth/login</code>."
        " The machine-readable document is <a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Auth</th>"
        f"<th>Parameters</th></tr>{''.join(rows)}</table></body></html>"
    )
