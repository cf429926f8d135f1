"""The descriptor set Envoy's transcoder loads: the bank's protos (gen/bank.desc) plus the
google.rpc error types, without source info.

The transcoder prints an upstream error as google.rpc.Status JSON from `grpc-status-details-bin`,
and can only print the details whose types it knows: RetryInfo (the 429's retry delay) and the
other google/rpc/error_details.proto messages come from googleapis-common-protos' compiled
modules, so gen_protos.py need not compile them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2, status_pb2

from services.gateway.descriptors import default_descriptor_set

_ERROR_TYPES: tuple[FileDescriptor, ...] = (status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)


def transcoder_descriptor_set(source: Path | None = None) -> descriptor_pb2.FileDescriptorSet:
    """Every file of `source` (default gen/bank.desc) and the error types with their imports,
    in dependency order (Envoy builds the files one by one), comments stripped."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (source or default_descriptor_set()).read_bytes()).file
    out = descriptor_pb2.FileDescriptorSet()
    done: set[str] = set()
    for file_proto in files:
        _add(out, done, file_proto)
    for extra in _with_imports(_ERROR_TYPES):
        proto = descriptor_pb2.FileDescriptorProto()
        extra.CopyToProto(proto)
        _add(out, done, proto)
    return out


def _add(out: descriptor_pb2.FileDescriptorSet, done: set[str],
         file_proto: descriptor_pb2.FileDescriptorProto) -> None:
    if file_proto.name in done:
        return
    copy = out.file.add()
    copy.CopyFrom(file_proto)
    copy.ClearField("source_code_info")
    done.add(file_proto.name)


def _with_imports(roots: Iterable[FileDescriptor]) -> list[FileDescriptor]:
    """The files and everything they import, each after its imports."""
    ordered: list[FileDescriptor] = []

    def visit(file: FileDescriptor) -> None:
        if any(f.name == file.name for f in ordered):
            return
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for root in roots:
        visit(root)
    return ordered


def comparable(data: bytes) -> dict[str, bytes]:
    """File name -> its FileDescriptorProto without source info, deterministically serialized:
    two descriptor sets that describe the same protos compare equal, whatever protoc made them
    (a committed set and a fresh one from a newer grpcio-tools)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    out: dict[str, bytes] = {}
    for file_proto in files:
        copy = descriptor_pb2.FileDescriptorProto()
        copy.CopyFrom(file_proto)
        copy.ClearField("source_code_info")
        out[copy.name] = copy.SerializeToString(deterministic=True)
    return out
