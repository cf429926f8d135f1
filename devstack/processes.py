"""A minimal owned-process wrapper plus readiness helpers.

Every server is started in its own session (``start_new_session=True``) so that a
Ctrl-C in the terminal does not reach it before we can stop it in order, and so
that the process group id equals the pid we own: the last-resort SIGKILL goes to
that group and, because PostgreSQL backends ``setsid()`` into groups of their own,
also to the direct children of the pid.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "DevstackError",
    "ManagedProcess",
    "child_pids",
    "kill_all_managed",
    "log_tail",
    "wait_for_port",
]


class DevstackError(RuntimeError):
    """A local dependency could not be started, or died."""


def log_tail(path: Path | None, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, or a note if it cannot be read."""
    if path is None:
        return "(no log file)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            # Logs can be large after a long `make run`; read just the end.
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.splitlines()[-lines:])


# Every process that was started and not yet reaped. The atexit hook kills them so
# that an interpreter exit (test failure, exception in a fixture, Ctrl-C) never
# leaves a redis-server or postgres running.
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


class ManagedProcess:
    """A ``subprocess.Popen`` we own, logging stdout+stderr to a file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.name = name or Path(self.argv[0]).name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        # System user to run as (only meaningful when we are root).
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} alive={self.alive}>"

    def start(self) -> None:
        if self.alive:
            raise DevstackError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted server (failover tests) keeps its earlier log.
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== devstack: starting {' '.join(self.argv)}\n".encode())
            log.flush()
            # The child gets its own copy of the fd; ours is closed by `with`.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                close_fds=True,
                # Drop to the service user; extra_groups=[] also drops root's
                # supplementary groups. All None (no change) when not requested.
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user is not None else None,
            )
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to our pid (not the group), if it is still running."""
        if self.alive:
            assert self._popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises ``subprocess.TimeoutExpired`` on timeout."""
        if self._popen is None:
            raise DevstackError(f"{self.name} was never started")
        rc = self._popen.wait(timeout)
        self._reap()
        return rc

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Graceful stop: ``sig`` to the pid, then SIGKILL after ``timeout`` s.

        Idempotent; returns the exit code (None if never started).
        """
        if self._popen is None:
            return None
        if self.alive:
            self.send_signal(sig)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the process, its process group and its direct children; reap it."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            # Only while the pid is still ours (alive, not yet reaped) can its pid
            # and its children be trusted not to have been recycled.
            children = child_pids(self._popen.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)
            # After the parent: a dying postmaster can no longer fork replacements.
            for child in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
        self._popen.wait()
        self._reap()

    def _reap(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            with _live_lock:
                _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def describe_failure(self, what: str) -> str:
        """An error message with the exit status and the end of the log."""
        status = "running" if self.alive else f"exited with code {self.returncode}"
        return (
            f"{what}: {self.name} (pid {self.pid}) {status}; "
            f"log {self.log_path}, last lines:\n{self.log_tail()}"
        )


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    children = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry))
    return children


def kill_all_managed() -> None:
    """SIGKILL every process still owned by this interpreter (atexit safety net)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()


atexit.register(kill_all_managed)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 30.0,
    process: ManagedProcess | None = None,
    interval: float = 0.05,
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Raises ``DevstackError`` with the log tail as soon as ``process`` exits, or
    when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.alive:
            raise DevstackError(process.describe_failure(f"died before listening on {port}"))
        if port_open(host, port, timeout=min(0.5, timeout)):
            return
        if time.monotonic() >= deadline:
            what = f"{host}:{port} not accepting connections after {timeout:.0f}s"
            if process is not None:
                raise DevstackError(process.describe_failure(what))
            raise DevstackError(what)
        time.sleep(interval)
