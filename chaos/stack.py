"""The stack under test (devstack's, every server on a free port, supervised as by `make run`)
and the faults done to it. Each fault returns when it is over: the replica or node is back (or
failed over), PostgreSQL answers; the run measures from then on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

from chaos.schedule import FaultKind, PlannedFault
from devstack.components import COMPONENTS
from devstack.launcher import Stack
from devstack.port_plan import PortPlan
from devstack.processes import ManagedProcess, port_open
from devstack.supervisor import Restart, Supervisor

# The services' and the edge's settings for the run. The limits are part of what is tested, but
# a workload of a few users acting every second from one address would spend most of it in
# 429s (the long profile's 16 users passed the edge's 3,000 a minute per address, and their
# revoked-token probes the failed-check quota: a third of their reads were refused); password
# hashing at OWASP's minimum argon2id profile keeps logins from eating the two cores.
SERVICE_ENV = {
    "BANK_RATE_LIMIT_PER_MINUTE": "1000000",
    "BANK_EDGE_ADDRESS_LIMIT_PER_MINUTE": "1000000",
    # The revoked-token probes are failed session checks, all from 127.0.0.1: past the quota
    # (20 a minute per address) that address is refused before any lookup, valid tokens too.
    "BANK_FAILED_SESSION_CHECKS_PER_MINUTE": "1000000",
    "BANK_REGISTER_PER_ADDRESS_PER_HOUR": "1000",  # every chaos user signs up from one address
    "BANK_ARGON2_TIME_COST": "2",
    "BANK_ARGON2_MEMORY_KIB": "19456",
    "BANK_ARGON2_PARALLELISM": "1",
    "BANK_LOG_JSON": "true",
}
_RECOVERY_TIMEOUT_S = 90.0
T = TypeVar("T")


@dataclass(frozen=True)
class FaultRecord:
    planned: PlannedFault
    target: str
    started: float  # monotonic
    ended: float  # the fault is over (back, failed over, answering)
    note: str = ""


@dataclass
class ChaosStack:
    run_dir: Path
    stack: Stack = field(init=False)
    supervisor: Supervisor = field(init=False)
    restarts: list[Restart] = field(default_factory=list)
    lost_redis_ports: set[int] = field(default_factory=set)
    _supervising: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.stack = Stack(self.run_dir, free_ports=True, extra_env=SERVICE_ENV,
                           service_ports=PortPlan.free())

    @property
    def edge_url(self) -> str:
        assert self.stack.edge_url is not None
        return self.stack.edge_url

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "gateway" / "tls.crt"

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.start)
        self.supervisor = self.stack.supervisor()
        self._supervising = asyncio.create_task(self._supervise(), name="chaos-supervisor")

    async def stop(self) -> None:
        if self._supervising is not None:
            self._supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervising
        for proc in self.stack.processes:
            proc.send_signal(signal.SIGCONT)  # a stopped replica would not hear SIGTERM
        await asyncio.to_thread(self.stack.stop)

    async def _supervise(self) -> None:
        while True:
            self.restarts.extend(self.supervisor.check())
            await asyncio.sleep(0.25)

    def replicas(self) -> list[ManagedProcess]:
        return sorted(self.stack.processes, key=lambda p: p.name)

    async def inject(self, fault: PlannedFault) -> FaultRecord:
        started = time.monotonic()
        match fault.kind:
            case FaultKind.REPLICA_KILL:
                target, note = await self._replica_kill(fault)
            case FaultKind.REPLICA_STOP:
                target, note = await self._replica_stop(fault)
            case FaultKind.REDIS_MASTER_KILL:
                target, note = await self._redis_master_kill(fault, comes_back=True)
            case FaultKind.REDIS_MASTER_LOSS:
                target, note = await self._redis_master_kill(fault, comes_back=False)
            case FaultKind.REDIS_HANG:
                target, note = await self._redis_hang(fault)
            case FaultKind.PG_RESTART:
                target, note = await self._pg_restart(fault)
            case FaultKind.PUBSUB_DROP:
                target, note = await self._pubsub_drop()
        return FaultRecord(fault, target, started, time.monotonic(), note)

    # The faults.

    async def _replica_kill(self, fault: PlannedFault) -> tuple[str, str]:
        victim = _pick(self.replicas(), fault.pick)
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        listen = self._listen_port(victim.name)

        async def back() -> bool:
            return bool(victim.alive and victim.pid != pid
                        and (listen is None or port_open("127.0.0.1", listen)))

        await _until(back, _RECOVERY_TIMEOUT_S, f"{victim.name} restarted")
        return victim.name, f"pid {pid} killed, restarted as pid {victim.pid}"

    async def _replica_stop(self, fault: PlannedFault) -> tuple[str, str]:
        victim = _pick(self.replicas(), fault.pick)
        victim.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.length_s)
        finally:
            victim.send_signal(signal.SIGCONT)
        return victim.name, f"stopped {fault.length_s:g} s"

    async def _redis_master_kill(self, fault: PlannedFault, *, comes_back: bool
                                 ) -> tuple[str, str]:
        cluster = self.stack.redis
        masters = await asyncio.to_thread(cluster.masters)
        if not comes_back:
            # Only a master whose replica is alive can be left down.
            with_replica = [m for m in masters
                            if await asyncio.to_thread(cluster.replicas_of, m)]
            masters = with_replica or masters
        port = _pick(sorted(masters), fault.pick)
        await asyncio.to_thread(cluster.kill_node, port)
        if comes_back:
            await asyncio.sleep(fault.length_s)
            await asyncio.to_thread(cluster.start_node, port)
            note = f"down {fault.length_s:g} s, started again"
        else:
            self.lost_redis_ports.add(port)
            note = "left down"
        await asyncio.to_thread(cluster.wait_healthy, _RECOVERY_TIMEOUT_S)
        role = "a replica" if port in await asyncio.to_thread(cluster.replicas) else "a master"
        return f"redis :{port}", note + (f" (back as {role})" if comes_back else "")

    async def _redis_hang(self, fault: PlannedFault) -> tuple[str, str]:
        cluster = self.stack.redis
        await asyncio.to_thread(cluster.pause_all_nodes)
        try:
            await asyncio.sleep(fault.length_s)
        finally:
            await asyncio.to_thread(cluster.resume_all_nodes)
        await asyncio.to_thread(cluster.wait_healthy, _RECOVERY_TIMEOUT_S)
        return "all redis nodes", f"stopped {fault.length_s:g} s"

    async def _pg_restart(self, fault: PlannedFault) -> tuple[str, str]:
        pg = self.stack.pg
        await asyncio.to_thread(pg.stop_server)
        await asyncio.sleep(fault.length_s)
        await asyncio.to_thread(pg.start_server)
        return "postgresql", f"down {fault.length_s:g} s"

    async def _pubsub_drop(self) -> tuple[str, str]:
        cluster = self.stack.redis
        killed = 0
        for port in await asyncio.to_thread(cluster.masters):
            def kill(p: int = port) -> int:
                with cluster.client(p) as node:
                    return int(node.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
            with contextlib.suppress(redis.RedisError):
                killed += await asyncio.to_thread(kill)
        return "redis pub/sub", f"{killed} connections killed"

    def _listen_port(self, name: str) -> int | None:
        component_name, _, replica = name.rpartition("-")
        component = next(c for c in COMPONENTS if c.name == component_name)
        ports = self.stack.plan.ports(component, int(replica))
        return ports.get("grpc") or ports.get("metrics")


def _pick(items: list[T], pick: float) -> T:
    return items[min(int(pick * len(items)), len(items) - 1)]


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {timeout_s:g} s")
        await asyncio.sleep(0.1)
