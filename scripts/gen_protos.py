"""Generate the one Python package (gen/bank/v1) and the descriptor set from protos/.

Run through `make protos`; generated code is never edited by hand and never committed.

    python scripts/gen_protos.py                  # modules, .pyi stubs, typed gRPC stubs
    python scripts/gen_protos.py --runtime-only   # modules and the descriptor set only

`--runtime-only` is the image's build (Dockerfile): it needs grpcio-tools alone, not the dev
extra's mypy-protobuf (protoc-gen-mypy_grpc), and type stubs are of no use at run time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen"


def _googleapis_include() -> Path:
    # googleapis-common-protos ships google/api/*.proto next to its generated modules.
    import google.api.annotations_pb2 as annotations

    return Path(annotations.__file__).resolve().parent.parent.parent


def _type_stub_args() -> list[str]:
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    if not plugin.exists():
        raise SystemExit(f"{plugin} is missing: install the dev extra (mypy-protobuf), or pass"
                         " --runtime-only")
    return [
        f"--pyi_out={OUT}",
        # Typed stubs for the gRPC modules (mypy-protobuf), so servicers type-check strictly.
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={OUT}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate gen/bank/v1 and gen/bank.desc")
    parser.add_argument("--runtime-only", action="store_true",
                        help="no type stubs (.pyi, typed gRPC stubs): no mypy-protobuf needed")
    options = parser.parse_args(argv)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    type_stubs = [] if options.runtime_only else _type_stub_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{_googleapis_include()}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        *type_stubs,
        f"--descriptor_set_out={OUT / 'bank.desc'}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    for folder in [OUT / "bank", OUT / "bank" / "v1"]:
        (folder / "__init__.py").touch()
    if not options.runtime_only:
        (OUT / "bank" / "py.typed").touch()
    print(f"generated {len(sources)} protos into {os.path.relpath(OUT, ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
