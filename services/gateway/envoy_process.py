"""Run Envoy as a child process owned by its pid (tests, `make run`), and wait on its admin
interface: ready (listeners bound), and how many hosts of a cluster pass their health check."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from services.gateway.envoy_binary import envoy_command


class EnvoyError(RuntimeError):
    """Envoy died, or did not become ready in time; the message carries its log's end."""


class EnvoyProcess:
    def __init__(self, config: Path, admin_port: int, log_path: Path, *,
                 concurrency: int = 1, name: str = "envoy") -> None:
        self.config = config
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.log_path = log_path
        self.concurrency = concurrency
        self.name = name
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                envoy_command(self.config, concurrency=self.concurrency),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us first; we stop it
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the admin interface says LIVE (listeners bound, initial health checks done)."""
        self._wait(lambda: self._admin("/ready").strip() == "LIVE", timeout_s, "ready")

    def wait_healthy_hosts(self, cluster: str, count: int, timeout_s: float = 30.0) -> None:
        self._wait(lambda: self.healthy_hosts(cluster) == count, timeout_s,
                   f"{count} healthy hosts in {cluster}")

    def healthy_hosts(self, cluster: str) -> int:
        lines = self._admin("/clusters").splitlines()
        return sum(1 for line in lines
                   if line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy"))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to our pid, SIGKILL after `timeout` s; returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        return self._popen.returncode

    def describe_failure(self, what: str) -> str:
        code = self._popen.poll() if self._popen is not None else None
        status = "running" if self.alive else f"exited with code {code}"
        return (f"{what}: {self.name} (pid {self.pid}) {status}; log {self.log_path}:\n"
                f"{self._tail()}")

    def __enter__(self) -> EnvoyProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    # The async forms wait in a thread: gRPC servers served by the same event loop must keep
    # answering Envoy's health checks meanwhile.
    async def __aenter__(self) -> EnvoyProcess:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    async def healthy(self, cluster: str, count: int, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_healthy_hosts, cluster, count, timeout_s)

    def _admin(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=1) as reply:
                return str(reply.read().decode())
        except OSError:
            return ""

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self._popen is not None and self._popen.poll() is not None:
                raise EnvoyError(self.describe_failure("envoy exited"))
            if time.monotonic() > deadline:
                raise EnvoyError(self.describe_failure(f"envoy not {what} after {timeout_s:g}s"))
            time.sleep(0.05)

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
