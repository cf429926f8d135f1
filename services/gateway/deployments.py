"""The committed bundles of docker-compose.yml and deploy/k8s, made by the same generator as
`make run`'s, with what differs in a container: every interface, a DNS name per service that
stands for all its replicas (STRICT_DNS), the certificate from a mounted Secret, mTLS to the
services (the internal CA and the edge's client certificate from another), a metrics listener
for Prometheus, two workers.

    python -m services.gateway deployments           # rewrite both bundles
    python -m services.gateway deployments --check   # exit 1 when one is stale

The check compares meaning, not bytes: JSON documents parsed, descriptor sets file by file
without source info (a newer protoc may serialize the same protos differently).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.gateway.bundle import (
    CONFIG,
    DESCRIPTORS,
    DOCS,
    OPENAPI,
    files_in,
    spec_from_settings,
    write_bundle,
)
from services.gateway.descriptor_set import comparable
from services.gateway.envoy_clusters import ClusterPolicy, Upstream, UpstreamTls
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# Where the containers mount the bundle and the TLS Secret (tls.crt, tls.key).
MOUNT = Path("/etc/envoy/gateway")
TLS_MOUNT = Path("/etc/envoy/tls")
# The internal CA and the edge's client certificate for the links to the services (mTLS).
UPSTREAM_TLS_MOUNT = Path("/etc/envoy/upstream-tls")
UPSTREAM_TLS = UpstreamTls(UPSTREAM_TLS_MOUNT / "ca.crt", UPSTREAM_TLS_MOUNT / "tls.crt",
                           UPSTREAM_TLS_MOUNT / "tls.key")
HTTPS_PORT = 8443
METRICS_PORT = 9105
CONCURRENCY = 2
# The services' gRPC ports (devstack/components.py; tests/deploy checks that they agree).
GRPC_PORTS = {"account": 7051, "transfer": 7052, "auth": 7053}


@dataclass(frozen=True)
class Deployment:
    name: str
    folder: Path  # where the bundle is committed
    dns_suffix: str  # account + suffix resolves to every account replica

    def upstreams(self) -> list[Upstream]:
        return [Upstream(name, ((name + self.dns_suffix, port),), dns=True)
                for name, port in GRPC_PORTS.items()]


DEPLOYMENTS = (
    Deployment("compose", ROOT / "deploy" / "compose" / "gateway", ""),
    Deployment("k8s", ROOT / "deploy" / "k8s" / "base" / "gateway", "-headless"),
)


def render(deployment: Deployment, out: Path) -> Path:
    defaults = Settings(database_url="", redis_nodes="")  # only the gateway's fields are read
    spec = spec_from_settings(defaults, deployment.upstreams(),
                              files_in(MOUNT, tls_folder=TLS_MOUNT), listen_host="0.0.0.0",
                              https_port=HTTPS_PORT, metrics_port=METRICS_PORT,
                              cluster_policy=ClusterPolicy(tls=UPSTREAM_TLS))
    return write_bundle(out, spec)


def stale_files(deployment: Deployment) -> list[str]:
    """The committed files that differ in meaning from a fresh rendering."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        render(deployment, fresh)
        stale = []
        for name in (CONFIG, OPENAPI, DOCS, DESCRIPTORS):
            committed = deployment.folder / name
            if not committed.exists() or not _same(name, committed, fresh / name):
                stale.append(str(committed.relative_to(ROOT)))
        return stale


def _same(name: str, committed: Path, fresh: Path) -> bool:
    if name == DESCRIPTORS:
        return comparable(committed.read_bytes()) == comparable(fresh.read_bytes())
    if name.endswith(".json"):
        return bool(json.loads(committed.read_text()) == json.loads(fresh.read_text()))
    return committed.read_text() == fresh.read_text()
