"""Write the Envoy edge configuration of docker-compose.yml and deploy/k8s with the edge tool
that `make run` uses (edge.envoy_config), so that the three deployments share one generator.

    python scripts/render_edge_configs.py           # rewrite both files
    python scripts/render_edge_configs.py --check   # exit 1 if a committed file is stale

tests/deploy runs --check and `envoy --mode validate` on both files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from devstack.components import COMPONENTS, EDGE_ADMIN_PORT, EDGE_HTTPS_PORT  # noqa: E402
from edge.envoy_config import EdgeSpec, build_envoy_config  # noqa: E402
from shared.config import Settings  # noqa: E402

# Where the certificate is mounted in both deployments: a kubernetes.io/tls Secret's keys, and
# what deploy/compose/make-dev-cert.sh writes.
TLS_DIR = Path("/etc/envoy/tls")
_GATEWAY_HTTP_PORT = next(c.http_port for c in COMPONENTS if c.name == "gateway")
assert _GATEWAY_HTTP_PORT is not None
GATEWAY_PORT: int = _GATEWAY_HTTP_PORT


@dataclass(frozen=True)
class EdgeDeployment:
    name: str
    output: Path
    # A DNS name that resolves to every gateway replica: compose's service name, or the
    # Kubernetes headless Service.
    gateway_host: str


DEPLOYMENTS = (
    EdgeDeployment("compose", ROOT / "deploy" / "compose" / "envoy.json", "gateway"),
    EdgeDeployment("k8s", ROOT / "deploy" / "k8s" / "base" / "edge" / "envoy.json",
                   "gateway-headless"),
)


def edge_spec(deployment: EdgeDeployment) -> EdgeSpec:
    defaults = Settings(database_url="unused", redis_nodes="unused")
    return EdgeSpec(
        host="0.0.0.0",  # in a container: every interface; published/exposed as 443
        https_port=EDGE_HTTPS_PORT,
        admin_port=EDGE_ADMIN_PORT,
        gateways=[(deployment.gateway_host, GATEWAY_PORT)],
        cert_file=TLS_DIR / "tls.crt",
        key_file=TLS_DIR / "tls.key",
        request_timeout_s=defaults.grpc_deadline_s + 2.0,  # as edge.write_edge_config does
    )


def _for_containers(config: dict[str, Any]) -> dict[str, Any]:
    """What differs from `make run`, where the gateways are fixed 127.0.0.1 ports: here a DNS
    name stands for all replicas and changes as they come and go (STRICT_DNS re-resolves and
    balances over every address), and the admin interface stays on the loopback interface,
    out of reach of the network."""
    (cluster,) = config["static_resources"]["clusters"]
    cluster["type"] = "STRICT_DNS"
    cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster["respect_dns_ttl"] = True
    cluster["dns_refresh_rate"] = "5s"
    config["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    return config


def render(deployment: EdgeDeployment) -> str:
    config = _for_containers(build_envoy_config(edge_spec(deployment)))
    return json.dumps(config, indent=2) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    for deployment in DEPLOYMENTS:
        text = render(deployment)
        current = deployment.output.read_text() if deployment.output.exists() else ""
        if text == current:
            continue
        if args.check:
            stale.append(str(deployment.output.relative_to(ROOT)))
        else:
            deployment.output.write_text(text)
            print(f"wrote {deployment.output.relative_to(ROOT)}")
    if stale:
        print("stale (run python scripts/render_edge_configs.py): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
