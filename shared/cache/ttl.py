"""TTL jitter: entries filled together (a cold start, a stampede) must not expire together."""

from __future__ import annotations

import random
from collections.abc import Callable


def jittered_ttl_ms(
    base_s: float, jitter: float, uniform: Callable[[], float] = random.random
) -> int:
    """`base_s` scaled by a factor drawn uniformly from [1 - jitter, 1 + jitter], in ms (>= 1)."""
    factor = 1.0 + jitter * (2.0 * uniform() - 1.0)
    return max(1, int(base_s * 1000 * factor))
