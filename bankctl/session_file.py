"""Where `bankctl login` keeps the session token: a file only its owner can read."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT = Path.home() / ".bankctl" / "session.json"


def save(path: Path, token: str, user_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"token": token, "user_id": user_id}, out)


def load(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["token"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
