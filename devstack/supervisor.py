"""Restarts crashed processes of the local stack with backoff, as a deployment would: the other
replicas keep serving meanwhile (the gateway's health checks route around the gap).

A process that dies is started again after `first_backoff_s`; one that dies again within
`stable_after_s` of its start waits twice as long the next time, up to `max_backoff_s`; one that
stayed up that long starts from the first backoff again. Stopping is the stack's business: the
supervisor only restarts while `check()` is being called, so Ctrl-C (which stops calling it) then
stops every process by its pid. A stopped (SIGSTOP) process is alive: hung, not crashed; a
liveness probe is the deployment's answer to that, not this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Restartable(Protocol):
    name: str

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...


@dataclass
class _Watched:
    process: Restartable
    backoff_s: float
    started_at: float
    died_at: float | None = None  # set while it is down
    restart_at: float = 0.0
    restarts: int = 0


@dataclass(frozen=True)
class Restart:
    name: str
    old_pid: int | None
    new_pid: int | None
    after_s: float  # how long it stayed down
    restarts: int


@dataclass
class Supervisor:
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stable_after_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _watched: list[_Watched] = field(default_factory=list)

    def watch(self, process: Restartable) -> None:
        self._watched.append(_Watched(process, self.first_backoff_s, self.clock()))

    def restarts(self, name: str) -> int:
        return sum(w.restarts for w in self._watched if w.process.name == name)

    def check(self) -> list[Restart]:
        """Notice the processes that died, restart those whose backoff has passed."""
        now = self.clock()
        done: list[Restart] = []
        for watched in self._watched:
            process = watched.process
            if process.alive:
                continue
            if watched.died_at is None:
                if now - watched.started_at >= self.stable_after_s:
                    watched.backoff_s = self.first_backoff_s  # it had been fine for a while
                watched.died_at = now
                watched.restart_at = now + watched.backoff_s
                watched.backoff_s = min(watched.backoff_s * 2, self.max_backoff_s)
            if now < watched.restart_at:
                continue
            old_pid = process.pid
            process.start()
            watched.restarts += 1
            done.append(Restart(process.name, old_pid, process.pid, now - watched.died_at,
                                watched.restarts))
            watched.started_at = now
            watched.died_at = None
        return done
