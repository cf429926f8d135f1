"""The fixed ports `make run` and the benchmarks use must stay out of the kernel's ephemeral
range: an outgoing connection can take such a port for a moment and a replica then fails to bind
(seen with 50062 before the ports moved)."""

from __future__ import annotations

from devstack.components import (
    COMPONENTS,
    EDGE_ADMIN_PORT,
    EDGE_HTTPS_PORT,
    POSTGRES_PORT,
    REDIS_PORTS,
)
from devstack.ports import REDIS_BUS_OFFSET, ephemeral_port_range


def test_fixed_ports_are_below_the_ephemeral_range_and_distinct() -> None:
    ports = [POSTGRES_PORT, EDGE_HTTPS_PORT, EDGE_ADMIN_PORT]
    ports += [p for port in REDIS_PORTS for p in (port, port + REDIS_BUS_OFFSET)]
    for component in COMPONENTS:
        for replica in range(component.replicas):
            ports += component.ports(replica).values()
    low, _ = ephemeral_port_range()
    assert max(ports) < low, sorted(p for p in ports if p >= low)
    assert len(ports) == len(set(ports)), "two processes would share a port"
