"""Where the local stack's services and gateway listen: the fixed ports of devstack.components
(what `make run` prints and the docs name), or free ports for all of them, so that a second
stack (a chaos run, a test) runs beside whatever else uses the fixed ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devstack.components import (
    COMPONENTS,
    EDGE_ADMIN_PORT,
    EDGE_HTTPS_PORT,
    Component,
)
from devstack.ports import HOST, free_ports


@dataclass(frozen=True)
class PortPlan:
    # component name -> one {"grpc": port, "metrics": port} per replica
    replicas: Mapping[str, tuple[Mapping[str, int], ...]]
    edge_https: int
    edge_admin: int

    @classmethod
    def fixed(cls) -> PortPlan:
        return cls({c.name: tuple(c.ports(i) for i in range(c.replicas)) for c in COMPONENTS},
                   EDGE_HTTPS_PORT, EDGE_ADMIN_PORT)

    @classmethod
    def free(cls) -> PortPlan:
        """A free port for every listener, taken in one call (no two alike)."""
        kinds = [(c.name, i, kind) for c in COMPONENTS for i in range(c.replicas)
                 for kind in c.ports(i)]
        ports = iter(free_ports(len(kinds) + 2))
        replicas: dict[str, list[dict[str, int]]] = {
            c.name: [{} for _ in range(c.replicas)] for c in COMPONENTS}
        for name, replica, kind in kinds:
            replicas[name][replica][kind] = next(ports)
        return cls({name: tuple(r) for name, r in replicas.items()}, next(ports), next(ports))

    def ports(self, component: Component, replica: int) -> dict[str, int]:
        return dict(self.replicas[component.name][replica])

    def grpc_target(self, component: Component) -> str:
        """Client-side round robin over the local replicas (in Kubernetes: dns:/// of a headless
        Service, which resolves to every pod)."""
        addrs = ",".join(f"{HOST}:{self.ports(component, i)['grpc']}"
                         for i in range(component.replicas))
        return f"ipv4:{addrs}"
