"""What the protos say about HTTP: every bank.* RPC, its google.api.http rules, its access options
(bank.v1.public / bank.v1.internal), its idempotency level and its doc comment.

The descriptor set (gen/bank.desc, made by `make protos`) names every proto file, so a new proto
file with annotated RPCs is picked up without touching the gateway; the messages themselves come
from the generated modules, which registers them in the default pool.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

# FileDescriptorProto / DescriptorProto field numbers used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD = 2



@dataclass(frozen=True)
class Rpc:
    service: ServiceDescriptor
    method: MethodDescriptor
    # The primary rule first, then its additional_bindings (flattened, without nesting).
    http_rules: tuple[http_pb2.HttpRule, ...]
    public: bool
    internal: bool
    # `option idempotency_level = NO_SIDE_EFFECTS`: safe to send again after UNAVAILABLE.
    side_effect_free: bool
    comment: str

    @property
    def full_method(self) -> str:
        """The gRPC path: /bank.v1.AccountService/GetBalance."""
        return f"/{self.service.full_name}/{self.method.name}"


@dataclass(frozen=True)
class ProtoCatalog:
    rpcs: tuple[Rpc, ...]
    # Leading comments by full name (messages, fields, enums, methods), for the OpenAPI document.
    comments: dict[str, str]


def default_descriptor_set() -> Path:
    import bank  # the generated package: gen/bank/__init__.py

    if bank.__file__ is None:
        raise FileNotFoundError("the generated package 'bank' has no file; run `make protos`")
    return Path(bank.__file__).resolve().parent.parent / "bank.desc"


def load_catalog(descriptor_set: Path | None = None, package_prefix: str = "bank.") -> ProtoCatalog:
    path = descriptor_set or default_descriptor_set()
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: run `make protos`") from None
    from bank.v1 import options_pb2  # generated; registers the bank.v1 method options

    rpcs: list[Rpc] = []
    comments: dict[str, str] = {}
    for file_proto in files:
        if not file_proto.package.startswith(package_prefix):
            continue
        comments.update(_comments(file_proto))
        if not file_proto.service:
            continue
        module = importlib.import_module(file_proto.name.removesuffix(".proto").replace("/", ".")
                                         + "_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                primary = options.Extensions[annotations_pb2.http]
                rules = (primary, *primary.additional_bindings) if _has_rule(primary) else ()
                rpcs.append(
                    Rpc(
                        service=service,
                        method=method,
                        http_rules=tuple(rules),
                        public=bool(options.Extensions[options_pb2.public]),
                        internal=bool(options.Extensions[options_pb2.internal]),
                        side_effect_free=(options.idempotency_level
                                          == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS),
                        comment=comments.get(method.full_name, ""),
                    )
                )
    return ProtoCatalog(tuple(rpcs), comments)


def _has_rule(rule: http_pb2.HttpRule) -> bool:
    return rule.WhichOneof("pattern") is not None


def http_verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("HttpRule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), str(getattr(rule, kind))


def _comments(file_proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    by_path: dict[tuple[int, ...], str] = {}
    for location in file_proto.source_code_info.location:
        if location.leading_comments:
            by_path[tuple(location.path)] = _clean(location.leading_comments)
    named: dict[str, str] = {}
    for path, name in _named_paths(file_proto):
        if path in by_path:
            named[name] = by_path[path]
    return named


def _named_paths(
    file_proto: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    package = file_proto.package
    for s_index, service in enumerate(file_proto.service):
        service_name = f"{package}.{service.name}"
        yield (_FILE_SERVICE, s_index), service_name
        for m_index, method in enumerate(service.method):
            yield ((_FILE_SERVICE, s_index, _SERVICE_METHOD, m_index),
                   f"{service_name}.{method.name}")
    for e_index, enum in enumerate(file_proto.enum_type):
        yield (_FILE_ENUM, e_index), f"{package}.{enum.name}"
    for m_index, message in enumerate(file_proto.message_type):
        yield from _message_paths(message, (_FILE_MESSAGE, m_index), f"{package}.{message.name}")


def _message_paths(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for f_index, field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELD, f_index), f"{name}.{field.name}"
    for n_index, nested in enumerate(message.nested_type):
        yield from _message_paths(nested, (*path, _MESSAGE_NESTED, n_index),
                                  f"{name}.{nested.name}")
    for e_index, enum in enumerate(message.enum_type):
        yield (*path, _MESSAGE_ENUM, e_index), f"{name}.{enum.name}"


def _clean(comment: str) -> str:
    return " ".join(line.strip() for line in comment.strip().splitlines())
