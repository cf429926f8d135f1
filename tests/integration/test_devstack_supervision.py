"""`make run`'s launcher, run as a process on free ports (`--free-ports`, beside any other stack):
a service replica killed with SIGKILL is restarted by it with a new pid while the other replica
keeps serving through the edge, and Ctrl-C then stops every process it started, by pid."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.components import COMPONENTS
from devstack.demo_data import DEMO_PASSWORD
from devstack.processes import port_open

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               launcher: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if launcher is not None and launcher.poll() is not None:
            pytest.fail(f"the launcher exited ({launcher.returncode}) before {what}:\n"
                        + (log.read_text(errors="replace")[-4000:] if log else ""))
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout_s:g} s")
        time.sleep(0.2)


def pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    run_dir, log = tmp_path / "stack", tmp_path / "launcher.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "devstack.launcher", "--free-ports", "--run-dir",
             str(run_dir)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"},
            start_new_session=True,
        )
    try:
        yield launcher, run_dir, log
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(90)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


def test_a_crashed_replica_restarts_and_ctrl_c_stops_everything(
    launched: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    launcher, run_dir, log = launched
    wait_until(lambda: "Ctrl-C stops everything" in log.read_text(errors="replace"),
               START_TIMEOUT_S, "up", launcher, log)
    state: dict[str, Any] = json.loads((run_dir / "stack.json").read_text())
    edge = httpx.Client(base_url=state["edge"]["url"], timeout=15,
                        verify=ssl.create_default_context(
                            cafile=str(run_dir / "gateway" / "tls.crt")))
    with edge:
        token = edge.post("/v1/auth/login", json={"email": "alice@example.com",
                                                  "password": DEMO_PASSWORD}).json()["token"]
        alice = {"Authorization": f"Bearer {token}"}
        accounts = edge.get("/v1/accounts", headers=alice).json()["accounts"]
        source = accounts[0]["accountId"]
        bob_login = edge.post("/v1/auth/login", json={"email": "bob@example.com",
                                                      "password": DEMO_PASSWORD})
        bob = {"Authorization": f"Bearer {bob_login.json()['token']}"}
        destination = edge.get("/v1/accounts", headers=bob).json()["accounts"][0]["accountId"]

        def transfer() -> int:
            """A client's transfer: retried under its key after a 503 (a request that was on
            its way to the replica as it died)."""
            key = uuid.uuid4().hex
            for _ in range(3):
                status = edge.post("/v1/transfers", headers={**alice, "Idempotency-Key": key},
                                   json={"fromAccountId": source, "toAccountId": destination,
                                         "amount": {"minorUnits": "1", "currency": "EUR"}},
                                   ).status_code
                if status != 503:
                    break
            return status

        victim = state["services"]["transfer-1"]
        os.kill(victim["pid"], signal.SIGKILL)
        # The other replica keeps serving while this one is down and restarting.
        statuses = [transfer() for _ in range(10)]
        assert statuses == [200] * 10

        def restarted() -> bool:
            now = json.loads((run_dir / "stack.json").read_text())
            pid = now["services"]["transfer-1"]["pid"]
            return pid != victim["pid"] and pid_alive(pid) and port_open("127.0.0.1",
                                                                          victim["grpc"])

        wait_until(restarted, 60, "restarted", launcher, log)
        assert "transfer-1 (pid" in log.read_text() and "restarted after" in log.read_text()

        def both_healthy() -> bool:
            try:
                clusters = httpx.get(f"http://127.0.0.1:{state['edge']['admin_port']}/clusters",
                                     timeout=2).text
            except httpx.HTTPError:
                return False
            return sum(1 for line in clusters.splitlines()
                       if line.startswith("transfer::")
                       and line.endswith("::health_flags::healthy")) == 2

        wait_until(both_healthy, 60, "both transfer replicas healthy at the edge", launcher, log)
        assert [transfer() for _ in range(4)] == [200] * 4

    final: dict[str, Any] = json.loads((run_dir / "stack.json").read_text())
    launcher.send_signal(signal.SIGINT)  # Ctrl-C
    assert launcher.wait(90) == 0
    pids = [final["postgres"]["pid"], final["edge"]["pid"],
            *(s["pid"] for s in final["services"].values()),
            *final["redis"].values()]
    assert len(pids) == 1 + 1 + sum(c.replicas for c in COMPONENTS) + 6
    assert [pid for pid in pids if pid_alive(pid)] == []
