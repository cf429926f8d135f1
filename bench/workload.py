"""The design's workload: what one user does in a day, turned into request shares, and the
arrival times of an open-loop run.

Per user per day: about 5 balance checks, 3 views of recent transactions, 1 transfer and a login,
so balance and history reads are 80 % of requests.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Op(enum.StrEnum):
    BALANCE = "balance"
    RECENT = "recent_transactions"
    TRANSFER = "transfer"
    LOGIN = "login"


READS = (Op.BALANCE, Op.RECENT)


@dataclass(frozen=True)
class OperationMix:
    """Relative weights of the operations (any positive scale: per day, per hour, shares)."""

    weights: tuple[tuple[Op, float], ...]

    @classmethod
    def per_user_per_day(cls, balance: float = 5, recent: float = 3, transfer: float = 1,
                         login: float = 1) -> OperationMix:
        pairs = ((Op.BALANCE, balance), (Op.RECENT, recent), (Op.TRANSFER, transfer),
                 (Op.LOGIN, login))
        return cls(tuple((op, float(w)) for op, w in pairs if w > 0))

    @classmethod
    def only(cls, op: Op) -> OperationMix:
        return cls(((op, 1.0),))

    def __post_init__(self) -> None:
        if not self.weights or any(w <= 0 for _, w in self.weights):
            raise ValueError("an operation mix needs positive weights")

    @property
    def total(self) -> float:
        return sum(w for _, w in self.weights)

    def share(self, op: Op) -> float:
        return sum(w for o, w in self.weights if o == op) / self.total

    @property
    def read_share(self) -> float:
        return sum(self.share(op) for op in READS)

    def picker(self) -> MixPicker:
        return MixPicker(self)

    def describe(self) -> str:
        return ", ".join(f"{op.value} {self.share(op):.0%}" for op, _ in self.weights)


class MixPicker:
    """Draws operations in the mix's proportions (precomputed cumulative weights)."""

    def __init__(self, mix: OperationMix) -> None:
        self._ops = [op for op, _ in mix.weights]
        self._cumulative = list(itertools.accumulate(w for _, w in mix.weights))

    def pick(self, rng: random.Random) -> Op:
        point = rng.random() * self._cumulative[-1]
        return self._ops[min(bisect.bisect_right(self._cumulative, point), len(self._ops) - 1)]


def poisson_arrivals(rate_per_s: float, duration_s: float, rng: random.Random) -> Iterator[float]:
    """Offsets (seconds from the start) of a Poisson process: independent users arriving at an
    average rate. Open loop: the schedule never waits for replies, so a slow server cannot slow
    the load down and hide its own latency (coordinated omission)."""
    if rate_per_s <= 0:
        return
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        yield t
        t += rng.expovariate(rate_per_s)


def visit_sequence(mix: OperationMix, rng: random.Random) -> list[Op]:
    """One user's day as one visit to the app: the mix's per-day counts (rounded), in the order
    an app makes them: log in, see the balance and the recent transactions, then the rest
    (more balance checks, history views, the transfer) in random order. Requests of one visit
    come close together in time, which is what lets a cache with a 60 s TTL serve most of them."""
    counts = {op: max(0, round(weight)) for op, weight in mix.weights}
    opening = [op for op in (Op.LOGIN, Op.BALANCE, Op.RECENT) if counts.get(op, 0) > 0]
    for op in opening:
        counts[op] -= 1
    rest = [op for op, n in counts.items() for _ in range(n)]
    rng.shuffle(rest)
    return opening + rest


# The hot account of the hot-account phase: the first bench user's (the Zipf choice's top rank).
HOT_USER = 0


class UserSampler(Protocol):
    def sample(self, rng: random.Random) -> int: ...

    def sample_other(self, rng: random.Random, not_this: int) -> int: ...


def transfer_parties(rng: random.Random, users: UserSampler, hot_share: float = 0.0
                     ) -> tuple[int, int]:
    """(source user, destination user) of a transfer: Zipf-chosen; with `hot_share`, exactly
    that share of the transfers touches HOT_USER's account (half from it, half to it), and the
    others do not."""
    if hot_share and rng.random() < hot_share:
        other = users.sample_other(rng, HOT_USER)
        return (HOT_USER, other) if rng.random() < 0.5 else (other, HOT_USER)
    while True:
        who = users.sample(rng)
        to = users.sample_other(rng, who)
        if not hot_share or HOT_USER not in (who, to):
            return who, to
