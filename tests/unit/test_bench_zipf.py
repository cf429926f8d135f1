"""The Zipf sampler: the skew the benchmark's hit rates depend on."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.zipf import ZipfSampler


def test_probabilities_follow_one_over_rank_to_the_s_and_sum_to_one() -> None:
    sampler = ZipfSampler(100, 1.0)
    assert sum(sampler.probability(i) for i in range(100)) == pytest.approx(1.0)
    assert sampler.probability(0) / sampler.probability(1) == pytest.approx(2.0)
    assert sampler.probability(0) / sampler.probability(9) == pytest.approx(10.0)


def test_exponent_zero_is_uniform() -> None:
    sampler = ZipfSampler(4, 0.0)
    assert [sampler.probability(i) for i in range(4)] == pytest.approx([0.25] * 4)


def test_draws_match_the_probabilities() -> None:
    sampler = ZipfSampler(50, 1.1)
    rng = random.Random(7)
    draws = Counter(sampler.sample(rng) for _ in range(200_000))
    assert set(draws) <= set(range(50))
    for index in (0, 1, 4, 20):
        assert draws[index] / 200_000 == pytest.approx(sampler.probability(index), rel=0.05)


def test_share_of_top_items() -> None:
    sampler = ZipfSampler(1000, 1.0)
    assert sampler.share_of_top(0) == 0.0
    assert sampler.share_of_top(1000) == pytest.approx(1.0)
    assert sampler.share_of_top(10) == pytest.approx(sum(sampler.probability(i) for i in range(10)))
    # the classic Zipf shape: the top 1 % of 1000 users take about 39 % of the draws
    assert 0.35 < sampler.share_of_top(10) < 0.42


def test_sample_other_never_returns_the_excluded_item() -> None:
    sampler = ZipfSampler(3, 2.0)
    rng = random.Random(1)
    assert all(sampler.sample_other(rng, 0) != 0 for _ in range(1000))


def test_the_same_seed_gives_the_same_draws() -> None:
    sampler = ZipfSampler(500, 1.0)
    first = [sampler.sample(random.Random(3)) for _ in range(5)]
    again = [sampler.sample(random.Random(3)) for _ in range(5)]
    assert first == again


@pytest.mark.parametrize(("n", "s"), [(0, 1.0), (10, -0.5)])
def test_rejects_impossible_parameters(n: int, s: float) -> None:
    with pytest.raises(ValueError):
        ZipfSampler(n, s)


def test_one_item_cannot_pick_another() -> None:
    with pytest.raises(ValueError):
        ZipfSampler(1, 1.0).sample_other(random.Random(), 0)
