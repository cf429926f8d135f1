"""Where the three services are: gRPC targets, each balanced per request over its replicas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    account: str
    transfer: str
    auth: str

    @classmethod
    def kubernetes(cls, namespace: str = "bank", domain: str = "svc.cluster.local") -> Endpoints:
        """The headless Services of deploy/k8s: DNS answers with every ready pod."""
        def target(name: str, port: int) -> str:
            return f"dns:///{name}-headless.{namespace}.{domain}:{port}"

        return cls(target("account", 7051), target("transfer", 7052), target("auth", 7053))

    @classmethod
    def local(cls, host: str = "127.0.0.1") -> Endpoints:
        """`make run`'s two replicas of each service (replica i listens on base + 10 * i)."""
        def target(port: int) -> str:
            return f"ipv4:{host}:{port},{host}:{port + 10}"

        return cls(target(7051), target(7052), target(7053))
