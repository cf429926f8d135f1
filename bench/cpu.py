"""CPU by process during a phase, from /proc: each group is a few root pids (a service replica,
Envoy, the postmaster, the Redis nodes) and every live process below them (PostgreSQL's
backends are the postmaster's children), so "CPU per transfer by process" is the increase of
each group's user + system time divided by the transfers made meanwhile."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.observe import CLOCK_TICKS, parse_pid_stat


def _process_table() -> tuple[dict[int, int], dict[int, int]]:
    """(parent of, jiffies of) every process /proc lists now."""
    parents: dict[int, int] = {}
    jiffies: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid, used = parse_pid_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        parents[int(entry)], jiffies[int(entry)] = ppid, used
    return parents, jiffies


def group_jiffies(roots: Sequence[int], parents: Mapping[int, int],
                  jiffies: Mapping[int, int]) -> int:
    """CPU of the roots and every process below them (pure, for tests)."""
    wanted = set(roots)
    total = 0
    for pid, used in jiffies.items():
        walker, depth = pid, 0
        while walker and walker not in wanted and depth < 64:
            walker, depth = parents.get(walker, 0), depth + 1
        if walker in wanted:
            total += used
    return total


@dataclass(frozen=True)
class CpuByProcess:
    seconds: dict[str, float]  # group -> CPU seconds used so far by its live processes
    at: float

    @classmethod
    def take(cls, groups: Mapping[str, Sequence[int]]) -> CpuByProcess:
        parents, jiffies = _process_table()
        return cls({name: group_jiffies(roots, parents, jiffies) / CLOCK_TICKS
                    for name, roots in groups.items()}, time.time())

    def since(self, earlier: CpuByProcess) -> dict[str, float]:
        """CPU seconds each group used between the two snapshots (processes that ended in
        between are not counted: the stack's processes live through a phase)."""
        return {name: max(0.0, used - earlier.seconds.get(name, 0.0))
                for name, used in self.seconds.items()}


def by_role(cpu_s: Mapping[str, float]) -> dict[str, float]:
    """Replicas summed by component: "transfer-0" and "transfer-1" are "transfer"."""
    out: dict[str, float] = {}
    for name, used in cpu_s.items():
        base, _, replica = name.rpartition("-")
        role = base if replica.isdigit() and base else name
        out[role] = out.get(role, 0.0) + used
    return out
