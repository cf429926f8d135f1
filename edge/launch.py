"""Start the edge for `make run` (devstack/launcher.py): a fresh certificate and config, checked
with `envoy --mode validate`, then Envoy as a devstack ManagedProcess, ready when it returns."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from devstack.processes import DevstackError, ManagedProcess
from edge import envoy_command, validate_config, write_edge_config
from shared.config import Settings


def start_edge(
    folder: Path,
    https_port: int,
    admin_port: int,
    gateway_ports: Sequence[int],
    *,
    settings: Settings | None = None,
    timeout_s: float = 30.0,
) -> tuple[ManagedProcess, str]:
    """Returns the running Envoy and its HTTPS base URL (the certificate, `folder/edge-cert.pem`,
    is self-signed: `curl --cacert` it, or `-k`)."""
    config = write_edge_config(folder, https_port, admin_port, gateway_ports, settings=settings)
    checked = validate_config(config)
    if checked.returncode != 0:
        raise DevstackError(f"the generated Envoy config is invalid:\n{checked.stdout}"
                            f"{checked.stderr}")
    proc = ManagedProcess(envoy_command(config), log_path=folder / "envoy.log", name="envoy")
    proc.start()
    host = settings.edge_host if settings else "127.0.0.1"
    deadline = time.monotonic() + timeout_s
    while not _ready(f"http://{host}:{admin_port}/ready"):
        if not proc.alive:
            raise DevstackError(proc.describe_failure("envoy did not start"))
        if time.monotonic() > deadline:
            proc.stop()
            raise DevstackError(proc.describe_failure(f"envoy not ready after {timeout_s:g}s"))
        time.sleep(0.1)
    return proc, f"https://{host}:{https_port}"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.read().decode().strip() == "LIVE")
    except OSError:
        return False
