"""Fixtures for the deployment tests: the validation tools (installed by `make setup` from
pyproject's dev extras, never downloaded at test time) and the rendered Kubernetes overlays."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
COMPOSE_FILE = ROOT / "docker-compose.yml"
_VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The tool from this venv (pyproject's dev extras), else from PATH; fail, never skip:
    `make setup` installs every one of them."""
    for candidate in (_VENV_BIN / name, shutil.which(name)):
        if candidate is not None and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed: run `make setup` (pyproject.toml dev extras)")


def run(args: list[str], *, cwd: Path = ROOT,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(path: Path) -> str:
    result = run([tool("kubectl"), "kustomize", str(path)])
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Overlay name -> the multi-document YAML `kubectl kustomize` renders for it."""
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def objects(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {overlay: load_all(text) for overlay, text in rendered.items()}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded
