"""Where the time goes: py-spy samples of a service replica during a closed-loop step, summed by
the function on top of the stack (self time) and by the library it belongs to."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
# Order matters: the first fragment found in a frame's file names its area.
_AREAS = (
    ("grpc", "gRPC"),
    ("redis/", "redis-py"),
    ("sqlalchemy", "SQLAlchemy"),
    ("psycopg", "psycopg"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("h11", "uvicorn"),
    ("google/protobuf", "protobuf"),
    ("prometheus_client", "prometheus_client"),
    ("argon2", "argon2"),
    ("logging", "logging"),
    ("json", "json"),
    ("asyncio", "asyncio/uvloop"),
    ("uvloop", "asyncio/uvloop"),
    ("services/", "our code (services)"),
    ("shared/", "our code (shared)"),
)


@dataclass(frozen=True)
class ProfileSummary:
    name: str
    samples: int
    top_functions: list[tuple[float, str]]  # (share of samples, "function (file)")
    areas: list[tuple[float, str]]  # (share of samples, library) by the top frame's file


def area_of(file: str) -> str:
    for fragment, area in _AREAS:
        if fragment in file:
            return area
    return "other"


def summarize_collapsed(name: str, text: str, top: int = 10) -> ProfileSummary:
    """Sum py-spy's raw (collapsed) stacks: `frame;frame;...;leaf count` per line."""
    functions: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.rsplit(";", 1)[-1]
        match = _FRAME.match(leaf)
        func, file = (match.group("func"), match.group("file")) if match else (leaf, "")
        short_file = "/".join(Path(file).parts[-2:]) if file else "?"
        functions[f"{func} ({short_file})"] += count
        areas[area_of(file)] += count
        total += count
    if not total:
        return ProfileSummary(name, 0, [], [])
    return ProfileSummary(
        name, total,
        [(n / total, f) for f, n in functions.most_common(top)],
        [(n / total, a) for a, n in areas.most_common()],
    )


class Profiler:
    """py-spy record on a few processes for a fixed time, in the background."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    @staticmethod
    def available() -> bool:
        return _py_spy() is not None

    def start(self, pids: dict[str, int], seconds: float) -> None:
        binary = _py_spy()
        if binary is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = self.folder / f"{name}.collapsed.txt"
            proc = subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                 "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )
            self._running.append((name, out, proc))

    def finish(self) -> list[ProfileSummary]:
        summaries = []
        for name, out, proc in self._running:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                summaries.append(summarize_collapsed(name, out.read_text()))
        self._running = []
        return summaries


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")
