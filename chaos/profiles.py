"""How long a run lasts, how many users it has, how often they act, how faults are spaced."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    fault_phase_s: float  # faults are started until this much time has passed
    users: int
    ops_per_user_s: float  # the mean rate of each user's actions
    gap_s: tuple[float, float]  # quiet time before each fault (after the previous one ended)
    length_s: tuple[float, float]  # how long a timed fault lasts (a hang, a node down)
    warmup_s: float
    cooldown_s: float


# Every kind of fault once (the schedule puts them first), a few more if time allows.
SHORT = Profile("short", fault_phase_s=75.0, users=8, ops_per_user_s=1.5, gap_s=(2.0, 4.0),
                length_s=(2.0, 4.0), warmup_s=5.0, cooldown_s=5.0)
LONG = Profile("long", fault_phase_s=660.0, users=16, ops_per_user_s=1.5, gap_s=(8.0, 25.0),
               length_s=(3.0, 10.0), warmup_s=10.0, cooldown_s=20.0)
PROFILES = {p.name: p for p in (SHORT, LONG)}
