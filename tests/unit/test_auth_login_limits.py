"""The attempt rules (services/auth/domain.py) and the bounded hashing pools
(adapters/work_pool.py), without I/O; the counters on the real PostgreSQL are in
tests/integration/test_login_limits_in_postgres.py."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from services.auth.adapters.work_pool import BoundedWorkPool
from services.auth.domain import FixedWindow, RisingDelay, Window
from shared.errors import Unavailable


def test_a_fixed_window_counts_to_its_limit_then_waits_for_its_end() -> None:
    rule = FixedWindow(limit=2, window_s=10)
    state = rule.admit(Window(0, 0), now=100)
    assert state == Window(1, 110)
    state = rule.admit(state, now=101)
    assert state == Window(2, 110)
    assert rule.admit(state, now=104) == 6  # seconds to wait
    assert rule.admit(state, now=110) == Window(1, 120)  # a new window


def test_a_rising_delay_is_free_then_doubles_up_to_its_cap() -> None:
    rule = RisingDelay(free=3, base_s=1, max_s=8, window_s=100)
    assert [rule.delay_after(n) for n in range(9)] == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert rule.delay_after(10_000) == 8  # no overflow however many failures
    state: Window | float = Window(0, 0)
    now = 1000.0
    for _ in range(3):
        assert isinstance(state, Window)
        state = rule.admit(state, now)
    assert state == Window(3, now + 100)  # forgotten a window after the last attempt
    assert rule.admit(state, now + 0.25) == pytest.approx(0.75)
    state = rule.admit(state, now + 1)
    assert state == Window(4, now + 101)
    assert rule.admit(state, now + 2) == pytest.approx(1)  # 2 s after the previous attempt
    assert rule.admit(state, now + 101) == Window(1, now + 201)  # forgotten


async def test_a_full_pool_refuses_at_once_and_another_pool_is_not_affected() -> None:
    """Deterministic: the work blocks on an event the test holds, so the pool stays full."""
    register = BoundedWorkPool("new_password_test", workers=1, queue=1)
    login = BoundedWorkPool("login_test", workers=1, queue=0)
    release = threading.Event()
    try:
        held = [asyncio.create_task(register.run(release.wait)) for _ in range(2)]
        while register.admitted < 2:
            await asyncio.sleep(0)
        with pytest.raises(Unavailable) as refused:
            await register.run(lambda: None)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert "new_password_test" in refused.value.message
        assert await login.run(lambda: "checked") == "checked"  # its own threads
        release.set()
        assert await asyncio.gather(*held) == [True, True]
        assert await register.run(lambda: "room again") == "room again"
    finally:
        release.set()
        register.close()
        login.close()


async def test_a_cancelled_call_holds_its_place_until_its_thread_is_done() -> None:
    pool = BoundedWorkPool("cancel_test", workers=1, queue=0)
    release = threading.Event()
    try:
        running = asyncio.create_task(pool.run(release.wait))
        while pool.admitted < 1:
            await asyncio.sleep(0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(Unavailable):  # the thread still hashes: still full
            await pool.run(lambda: None)
        release.set()
        while pool.admitted:
            await asyncio.sleep(0.01)
        assert await pool.run(lambda: 1) == 1
    finally:
        release.set()
        pool.close()
