"""The design's operation mix and the open-loop arrival schedule."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.workload import Op, OperationMix, poisson_arrivals


def test_the_design_mix_is_80_percent_reads() -> None:
    mix = OperationMix.per_user_per_day()
    assert mix.read_share == pytest.approx(0.8)
    assert mix.share(Op.BALANCE) == pytest.approx(0.5)
    assert mix.share(Op.TRANSFER) == pytest.approx(0.1)
    assert mix.describe() == ("balance 50%, recent_transactions 30%, transfer 10%, login 10%")


def test_picker_draws_in_proportion() -> None:
    mix = OperationMix.per_user_per_day()
    picker = mix.picker()
    rng = random.Random(3)
    draws = Counter(picker.pick(rng) for _ in range(100_000))
    for op in Op:
        assert draws[op] / 100_000 == pytest.approx(mix.share(op), abs=0.01)


def test_single_operation_mix_and_zero_weights() -> None:
    assert OperationMix.only(Op.TRANSFER).picker().pick(random.Random()) is Op.TRANSFER
    no_logins = OperationMix.per_user_per_day(login=0)
    assert Op.LOGIN not in {op for op, _ in no_logins.weights}
    with pytest.raises(ValueError):
        OperationMix(())


def test_poisson_arrivals_have_the_target_rate_and_stay_in_the_window() -> None:
    offsets = list(poisson_arrivals(100.0, 60.0, random.Random(9)))
    assert all(0 <= t < 60.0 for t in offsets)
    assert offsets == sorted(offsets)
    assert len(offsets) == pytest.approx(6000, rel=0.05)
    assert list(poisson_arrivals(0.0, 10.0, random.Random())) == []


def test_a_visit_is_the_days_requests_opening_with_login_balance_history() -> None:
    from bench.workload import visit_sequence

    rng = random.Random(2)
    visit = visit_sequence(OperationMix.per_user_per_day(), rng)
    assert visit[:3] == [Op.LOGIN, Op.BALANCE, Op.RECENT]
    assert Counter(visit) == {Op.BALANCE: 5, Op.RECENT: 3, Op.TRANSFER: 1, Op.LOGIN: 1}
    orders = {tuple(visit_sequence(OperationMix.per_user_per_day(), rng)) for _ in range(20)}
    assert len(orders) > 1  # the rest comes shuffled
    assert visit_sequence(OperationMix.only(Op.TRANSFER), rng) == [Op.TRANSFER]
