"""What the local stack runs: one table that `make run` (devstack.launcher), docker-compose and
deploy/k8s are checked against, so the three deployments cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    name: str
    # `python -m <module>`; None for servers that are not our code.
    module: str | None
    replicas: int
    # Port of the first replica; replica i listens on base_port + 10 * i.
    grpc_port: int | None = None
    metrics_port: int | None = None
    # A periodic job: a Kubernetes CronJob on this schedule (`--once` per run); locally and in
    # compose a process that repeats its pass every BANK_RETENTION_INTERVAL_S.
    schedule: str | None = None

    def ports(self, replica: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, base in (
            ("grpc", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            if base is not None:
                out[kind] = base + 10 * replica
        return out


POSTGRES_PORT = 5433
REDIS_PORTS = (7001, 7002, 7003, 7004, 7005, 7006)
EDGE_HTTPS_PORT = 8443
EDGE_ADMIN_PORT = 9901

COMPONENTS: tuple[Component, ...] = (
    Component("account", "services.account", replicas=2, grpc_port=7051, metrics_port=9101),
    Component("transfer", "services.transfer", replicas=2, grpc_port=7052, metrics_port=9102),
    Component("auth", "services.auth", replicas=2, grpc_port=7053, metrics_port=9103),
    Component("outbox-relay", "services.transfer.relay", replicas=1, metrics_port=9104),
    # Retention (docs/database.md): published outbox rows, old rejections, ended sessions.
    Component("transfer-retention", "services.transfer.retention", replicas=1,
              schedule="*/5 * * * *"),
    Component("auth-retention", "services.auth.retention", replicas=1, schedule="*/5 * * * *"),
)
# The gateway is Envoy (EDGE_HTTPS_PORT), in front of the replicas of these components.
GATEWAY_UPSTREAMS = ("account", "transfer", "auth")


def grpc_target(component: Component) -> str:
    """Client-side round robin over the local replicas (in Kubernetes: dns:/// of a headless
    Service, which resolves to every pod)."""
    assert component.grpc_port is not None
    addrs = ",".join(f"127.0.0.1:{component.ports(i)['grpc']}" for i in range(component.replicas))
    return f"ipv4:{addrs}"
