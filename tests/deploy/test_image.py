"""The Dockerfile and its entrypoint, without a Docker engine: hadolint (a real linter, installed
from pyproject's dev extras), the stages' contents, the build context, and the entrypoint's
role -> module table run for real with a stand-in `python`."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from devstack.components import COMPONENTS
from tests.deploy.conftest import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_accepts_the_dockerfile() -> None:
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_is_slim_and_unprivileged() -> None:
    builder, final = stages()
    assert "AS builder" in builder[0] and "AS runtime" in final[0]
    assert "slim" in DOCKERFILE.read_text().split("ARG PYTHON_IMAGE=")[1].splitlines()[0]
    final_text = "\n".join(final)
    for build_tool in ("apt-get install", "build-essential", "gcc", "pip install", "gen_protos"):
        assert build_tool not in final_text, build_tool
    user = next(i for i in reversed(final) if i.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user, for runAsNonRoot"
    assert any("gen_protos.py" in i for i in builder), "protos are generated in the builder"
    assert "ENTRYPOINT" in final_text and "PYTHONPATH=/app:/app/gen" in final_text


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used there: last match wins, ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
                  for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_dockerfile_copies_and_no_secrets() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: everything else stays out of the context"
    copies = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for source in copies:
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), source
    for secret in (".env", "deploy/compose/tls/tls.key", "shared/__pycache__/x.pyc", ".git/HEAD",
                   ".venv/bin/python", "gen/bank.desc", "tests/conftest.py"):
        assert _ignored(secret, patterns), f"{secret} would be sent to the build"


@pytest.fixture
def stub_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a `python` that prints its arguments: the entrypoint's exec is observed."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "python $*"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}


def entrypoint(role: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), role, "--flag"], capture_output=True,
                          text=True, env=env, timeout=30, check=False)


def test_entrypoint_runs_every_component_by_name(stub_env: dict[str, str]) -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR, "the entrypoint must be executable"
    roles = {c.name: c.module for c in COMPONENTS}
    roles["migrate"] = "shared.migrate"
    for role, module in roles.items():
        result = entrypoint(role, stub_env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"python -m {module} --flag", role


def test_entrypoint_rejects_unknown_roles(stub_env: dict[str, str]) -> None:
    result = entrypoint("acount", stub_env)
    assert result.returncode == 64 and "unknown role" in result.stderr
