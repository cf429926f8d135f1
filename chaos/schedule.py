"""The faults a seed gives: kinds, lengths, gaps and which target, drawn from one
`random.Random(seed)`. Each kind comes once first (in a seeded order), then kinds at random.
Targets are drawn as a number in [0, 1) and resolved when the fault starts, among what exists
then (which nodes are masters depends on the faults before)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from chaos.profiles import Profile


class FaultKind(StrEnum):
    REPLICA_KILL = "replica_kill"  # kill -9 of a service replica; the supervisor restarts it
    REPLICA_STOP = "replica_stop"  # SIGSTOP of a service replica for the fault's length
    REDIS_MASTER_KILL = "redis_master_kill"  # kill -9 of a master, started again after a while
    REDIS_MASTER_LOSS = "redis_master_loss"  # kill -9 of a master that stays down
    REDIS_HANG = "redis_hang"  # SIGSTOP of every Redis node for the fault's length
    PG_RESTART = "pg_restart"  # PostgreSQL stopped, started again after the fault's length
    PUBSUB_DROP = "pubsub_drop"  # every pub/sub connection of the cluster killed


DESCRIPTIONS = {
    FaultKind.REPLICA_KILL: "kill -9 of a service replica (restarted by the supervisor)",
    FaultKind.REPLICA_STOP: "SIGSTOP of a service replica, SIGCONT after the length",
    FaultKind.REDIS_MASTER_KILL: "kill -9 of a Redis master, started again after the length",
    FaultKind.REDIS_MASTER_LOSS: "kill -9 of a Redis master that stays down",
    FaultKind.REDIS_HANG: "SIGSTOP of all six Redis nodes, SIGCONT after the length",
    FaultKind.PG_RESTART: "PostgreSQL stopped, started again after the length",
    FaultKind.PUBSUB_DROP: "CLIENT KILL TYPE pubsub on every Redis master",
}


@dataclass(frozen=True)
class PlannedFault:
    index: int
    kind: FaultKind
    gap_s: float  # quiet time before it, after the previous fault ended
    length_s: float
    pick: float  # which target, in [0, 1)


def schedule(seed: int, profile: Profile) -> Iterator[PlannedFault]:
    """Endless: the run takes faults until its fault phase is over. A master is lost (left
    down) once per run at most: the cluster has three shards of two nodes, and a second loss in
    the shard of the first would leave slots without a node."""
    rng = random.Random(seed)
    first = list(FaultKind)
    rng.shuffle(first)
    lost = False
    index = 0
    while True:
        kind = first[index] if index < len(first) else rng.choice(list(FaultKind))
        if kind is FaultKind.REDIS_MASTER_LOSS:
            if lost:
                kind = FaultKind.REDIS_MASTER_KILL
            lost = True
        yield PlannedFault(index, kind, round(rng.uniform(*profile.gap_s), 2),
                           round(rng.uniform(*profile.length_s), 2), rng.random())
        index += 1
