"""Fast checks of devstack's port picking and process wrapper (no servers needed)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from devstack.ports import REDIS_BUS_OFFSET, ephemeral_port_range, free_ports, free_redis_ports
from devstack.processes import DevstackError, ManagedProcess, kill_all_managed, wait_for_port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(ports) == len(set(ports)) == 8
    assert all(0 < p <= 65535 and _bindable(p) for p in ports)
    assert free_ports(0) == []


def test_free_ports_skips_a_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert taken not in free_ports(16)


def test_free_redis_ports_leave_room_for_the_cluster_bus() -> None:
    ports = free_redis_ports(6)
    assert len(set(ports)) == 6
    buses = [p + REDIS_BUS_OFFSET for p in ports]
    # No client port may collide with another node's bus port either.
    assert not set(ports) & set(buses)
    for p, bus in zip(ports, buses, strict=True):
        assert bus <= 65535
        assert _bindable(p) and _bindable(bus)
    # Both stay below the kernel's ephemeral range (outgoing connections' ports).
    low, _ = ephemeral_port_range()
    if low - REDIS_BUS_OFFSET > 10000 + 60:
        assert all(bus < low for bus in buses)


def test_free_ports_rejects_negative() -> None:
    with pytest.raises(ValueError):
        free_ports(-1)
    with pytest.raises(ValueError):
        free_redis_ports(-1)


def test_managed_process_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    # Ignores SIGTERM, so stop() must fall back to SIGKILL after the timeout.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "p.log")
    proc.start()
    assert proc.alive and proc.pid is not None
    time.sleep(0.3)  # let it install the handler
    started = time.monotonic()
    proc.stop(timeout=0.5)
    assert not proc.alive
    assert time.monotonic() - started < 5
    proc.stop()  # idempotent
    proc.kill()


def test_wait_for_port_reports_the_log_of_a_dead_process(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "print('boom: cannot bind'); raise SystemExit(3)"],
        log_path=tmp_path / "dead.log",
    )
    proc.start()
    with pytest.raises(DevstackError, match="boom: cannot bind") as info:
        wait_for_port("127.0.0.1", free_ports(1)[0], timeout=10, process=proc)
    assert "code 3" in str(info.value)
    proc.stop()


def test_wait_for_port_times_out_with_a_clear_error(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "print('still booting', flush=True); import time; time.sleep(30)"],
        log_path=tmp_path / "slow.log",
    )
    proc.start()
    try:
        with pytest.raises(DevstackError, match="not accepting connections"):
            wait_for_port("127.0.0.1", free_ports(1)[0], timeout=0.5, process=proc)
    finally:
        proc.stop(timeout=2)
    assert "still booting" in proc.log_tail()


def test_wait_for_port_succeeds_when_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        wait_for_port("127.0.0.1", srv.getsockname()[1], timeout=2)


def test_safety_net_kills_leftovers(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "x.log"
    )
    proc.start()
    kill_all_managed()  # what atexit runs
    assert not proc.alive
