"""The local stack's supervisor on fake processes and a fake clock: a crash is restarted after a
backoff that doubles while the process keeps crashing, and resets once it stayed up."""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.supervisor import Supervisor


@dataclass
class FakeProcess:
    name: str
    alive: bool = True
    starts: int = 0
    pids: list[int] = field(default_factory=lambda: [100])

    @property
    def pid(self) -> int | None:
        return self.pids[-1]

    def start(self) -> None:
        self.starts += 1
        self.alive = True
        self.pids.append(self.pids[-1] + 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_crash_is_restarted_after_the_backoff_and_the_others_are_left_alone() -> None:
    clock = Clock()
    supervisor = Supervisor(first_backoff_s=0.5, max_backoff_s=4, stable_after_s=10,
                            clock=clock)
    crashed, fine = FakeProcess("transfer-1"), FakeProcess("transfer-0")
    supervisor.watch(crashed)
    supervisor.watch(fine)
    assert supervisor.check() == []
    crashed.alive = False
    assert supervisor.check() == []  # noticed; waits its backoff
    clock.now = 0.4
    assert supervisor.check() == []
    clock.now = 0.5
    [restart] = supervisor.check()
    assert (restart.name, restart.old_pid, restart.new_pid, restart.restarts) == (
        "transfer-1", 100, 101, 1)
    assert restart.after_s == 0.5
    assert (crashed.starts, fine.starts) == (1, 0)


def test_the_backoff_doubles_while_it_keeps_crashing_then_resets() -> None:
    clock = Clock()
    supervisor = Supervisor(first_backoff_s=0.5, max_backoff_s=2, stable_after_s=10,
                            clock=clock)
    process = FakeProcess("account-0")
    supervisor.watch(process)
    waits = []
    for _ in range(4):
        process.alive = False
        supervisor.check()
        died = clock.now
        while not supervisor.check():
            clock.now += 0.25
        waits.append(clock.now - died)
        clock.now += 1  # crashes again soon after
    assert waits == [0.5, 1.0, 2.0, 2.0]
    clock.now += 10  # stable for a while: the next crash starts from the first backoff
    process.alive = False
    supervisor.check()
    died = clock.now
    while not supervisor.check():
        clock.now += 0.25
    assert clock.now - died == 0.5
    assert supervisor.restarts("account-0") == 5
