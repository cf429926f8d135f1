"""Build step of cachebank-client: generate the `bank` package from the protos with grpcio-tools
(a build requirement), into the wheel, at build time.

The protos come from the repository (../../protos) when building from a checkout, or from the
sdist's own copy (./protos, put there by the sdist command below). The wheel's dependencies name
at least the grpcio and protobuf versions the code was generated for: the generated modules
refuse to import under older ones.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CANDIDATES = (HERE / "protos", HERE.parent.parent / "protos")


def protos_root() -> Path:
    for candidate in CANDIDATES:
        if (candidate / "bank").is_dir():
            return candidate
    raise RuntimeError("protos/bank not found: build from the repository or from its sdist")


def generate(out: Path) -> None:
    import google.api.annotations_pb2 as annotations
    import grpc_tools
    from grpc_tools import protoc

    root = protos_root()
    sources = sorted(str(p.relative_to(root)) for p in (root / "bank").rglob("*.proto"))
    googleapis = Path(annotations.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    code = protoc.main(["grpc_tools.protoc", f"-I{root}", f"-I{googleapis}", f"-I{well_known}",
                        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                        *sources])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    for package in {out / Path(s).parent for s in sources} | {out / "bank"}:
        (package / "__init__.py").touch()
    (out / "bank" / "py.typed").touch()


def generated_for() -> list[str]:
    """grpcio >= the generator's version; protobuf >= the generated code's, same major."""
    from grpc_tools import grpc_version

    protobuf = re.search(r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+)",
                         generated_sample())
    if protobuf is None:
        return [f"grpcio>={grpc_version.VERSION}", "protobuf>=5.27"]
    major, minor, patch = (int(part) for part in protobuf.groups())
    return [f"grpcio>={grpc_version.VERSION}", f"protobuf>={major}.{minor}.{patch},<{major + 1}"]


def generated_sample() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        return next(Path(scratch).rglob("common_pb2.py")).read_text()


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate(Path(self.build_lib))
        super().run()


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        shutil.copytree(protos_root() / "bank", Path(base_dir) / "protos" / "bank",
                        dirs_exist_ok=True)


setup(
    cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProtos},
    install_requires=[*generated_for(), "googleapis-common-protos>=1.63"],
)
