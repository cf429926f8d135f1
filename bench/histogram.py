"""Latency histograms that merge across processes and give percentiles within 1 %.

Buckets are geometric (each 1 % wider than the last) over microseconds, so one histogram covers
1 us .. hours in about a thousand sparse buckets; count, sum, min and max are exact, which makes
the average exact and clamps percentiles to values that were really seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_RATIO = 1.01
_LOG_RATIO = math.log(_RATIO)


def bucket_index(micros: float) -> int:
    """Bucket i holds values in [RATIO**i, RATIO**(i+1)) microseconds; below 1 us is bucket 0."""
    if micros < 1.0:
        return 0
    return int(math.log(micros) / _LOG_RATIO)


def bucket_value(index: int) -> float:
    """The value a bucket stands for: the geometric middle of its bounds (error <= 0.5 %)."""
    return float(_RATIO ** (index + 0.5))


@dataclass
class LatencyHistogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_s: float = 0.0
    min_s: float = math.inf
    max_s: float = 0.0

    def record(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        index = bucket_index(seconds * 1e6)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total_s += seconds
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total_s += other.total_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else math.nan

    def percentile_s(self, p: float) -> float:
        """The p-th percentile (0 < p <= 100) by the nearest-rank rule; NaN when empty."""
        if not 0 < p <= 100:
            raise ValueError("percentile must be in (0, 100]")
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(p / 100 * self.count))
        if rank == self.count:
            return self.max_s  # the extremes are known exactly
        if rank == 1:
            return self.min_s
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                value = bucket_value(index) / 1e6
                return min(max(value, self.min_s), self.max_s)
        return self.max_s  # unreachable: the counts add up to self.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "count": self.count,
            "total_s": self.total_s,
            "min_s": self.min_s if self.count else None,
            "max_s": self.max_s,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LatencyHistogram:
        return cls(
            counts={int(k): int(v) for k, v in raw["counts"].items()},
            count=int(raw["count"]),
            total_s=float(raw["total_s"]),
            min_s=math.inf if raw["min_s"] is None else float(raw["min_s"]),
            max_s=float(raw["max_s"]),
        )


def merged(histograms: list[LatencyHistogram]) -> LatencyHistogram:
    out = LatencyHistogram()
    for h in histograms:
        out.merge(h)
    return out
