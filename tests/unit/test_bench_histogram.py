"""Latency histograms: percentiles within the bucket precision, exact means, merging."""

from __future__ import annotations

import math
import random

import pytest

from bench.histogram import LatencyHistogram, bucket_index, bucket_value, merged


def _exact_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def test_empty_histogram_has_no_figures() -> None:
    hist = LatencyHistogram()
    assert math.isnan(hist.mean_s)
    assert math.isnan(hist.percentile_s(99))


def test_percentiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(11)
    values = [rng.lognormvariate(math.log(0.002), 1.0) for _ in range(20_000)]
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for p in (50, 90, 95, 99, 99.9):
        assert hist.percentile_s(p) == pytest.approx(_exact_percentile(values, p), rel=0.01)
    assert hist.mean_s == pytest.approx(sum(values) / len(values))
    assert hist.percentile_s(100) == max(values)


def test_a_single_value_is_every_percentile() -> None:
    hist = LatencyHistogram()
    hist.record(0.0123)
    assert hist.percentile_s(1) == hist.percentile_s(50) == hist.percentile_s(100) == 0.0123


def test_nearest_rank_on_a_small_sample() -> None:
    hist = LatencyHistogram()
    for ms in (1, 2, 3, 4, 100):
        hist.record(ms / 1000)
    assert hist.percentile_s(50) == pytest.approx(0.003, rel=0.01)
    assert hist.percentile_s(80) == pytest.approx(0.004, rel=0.01)
    assert hist.percentile_s(81) == pytest.approx(0.100, rel=0.01)


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(5)
    parts = [LatencyHistogram() for _ in range(3)]
    whole = LatencyHistogram()
    for i in range(3000):
        v = rng.expovariate(200)
        parts[i % 3].record(v)
        whole.record(v)
    combined = merged(parts)
    assert combined.counts == whole.counts
    assert combined.count == whole.count
    assert combined.total_s == pytest.approx(whole.total_s)
    assert (combined.min_s, combined.max_s) == (whole.min_s, whole.max_s)


def test_round_trips_through_a_dict() -> None:
    hist = LatencyHistogram()
    for v in (0.001, 0.002, 0.5):
        hist.record(v)
    again = LatencyHistogram.from_dict(hist.to_dict())
    assert again == hist
    assert LatencyHistogram.from_dict(LatencyHistogram().to_dict()).count == 0


def test_bucket_bounds_hold_their_values() -> None:
    for micros in (1.0, 7.3, 999.0, 12_345.6, 5e7):
        index = bucket_index(micros)
        assert 1.01**index <= micros * (1 + 1e-12)
        assert micros < 1.01 ** (index + 1)
        assert bucket_value(index) == pytest.approx(micros, rel=0.011)
    assert bucket_index(0.2) == 0


def test_negative_durations_count_as_zero() -> None:
    hist = LatencyHistogram()
    hist.record(-0.001)
    assert hist.min_s == 0.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_rejects_percentiles_out_of_range(p: float) -> None:
    hist = LatencyHistogram()
    hist.record(0.001)
    with pytest.raises(ValueError):
        hist.percentile_s(p)
