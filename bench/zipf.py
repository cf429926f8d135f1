"""Zipf-skewed choice: rank k (1-based) is picked with probability proportional to 1 / k**s.

Banking traffic is skewed: a few accounts (businesses, heavy users) are read and moved far more
often than the long tail. The skew decides the cache's hit rate, so it is a parameter of the run.
"""

from __future__ import annotations

import bisect
import itertools
import random


class ZipfSampler:
    """Draws indexes 0..n-1 where index i has rank i + 1 (index 0 is the hottest)."""

    def __init__(self, n: int, exponent: float) -> None:
        if n < 1:
            raise ValueError("a Zipf sampler needs at least one item")
        if exponent < 0:
            raise ValueError("the Zipf exponent must be >= 0 (0 is uniform)")
        self.n = n
        self.exponent = exponent
        weights = [1.0 / (k**exponent) for k in range(1, n + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    def probability(self, index: int) -> float:
        """The probability of drawing `index` (for reports and tests)."""
        low = self._cumulative[index - 1] if index > 0 else 0.0
        return float((self._cumulative[index] - low) / self._total)

    def sample(self, rng: random.Random) -> int:
        point = rng.random() * self._total
        # bisect_right: a point exactly on a boundary belongs to the next item, and the
        # min() guards the float edge where random() * total rounds up to total.
        return min(bisect.bisect_right(self._cumulative, point), self.n - 1)

    def sample_other(self, rng: random.Random, not_this: int) -> int:
        """A draw different from `not_this` (the other side of a transfer)."""
        if self.n < 2:
            raise ValueError("need two items to pick a different one")
        while True:
            index = self.sample(rng)
            if index != not_this:
                return index

    def share_of_top(self, count: int) -> float:
        """Share of all draws that go to the `count` hottest items."""
        count = max(0, min(count, self.n))
        return self._cumulative[count - 1] / self._total if count else 0.0
