"""The lock files install what pyproject.toml asks for, pinned and hashed: requirements.lock
(runtime + dev, `make setup`) and requirements-image.lock (runtime + grpcio-tools, the image's
builder). `make lock` regenerates both."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(name: str) -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes) of every pin in a lock file."""
    pins: dict[str, tuple[Version, int]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (Version(match.group(2)), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif not line.startswith((" ", "#")) and line.strip():
            raise AssertionError(f"{name}: not a pin, hash or comment: {line!r}")
    return pins


def wanted(*extras: str) -> list[Requirement]:
    declared = list(PROJECT["dependencies"])
    for extra in extras:
        declared += PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in declared]


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ("dev", "protos")),
                                               ("requirements-image.lock", ("protos",))])
def test_every_declared_dependency_is_locked_within_its_range(
        lock: str, extras: tuple[str, ...]) -> None:
    pins = locked(lock)
    for requirement in wanted(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock}: run `make lock`"
        version, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-image.lock"])
def test_every_pin_carries_hashes(lock: str) -> None:
    pins = locked(lock)
    assert pins
    assert [name for name, (_v, hashes) in pins.items() if hashes == 0] == []


def test_the_image_lock_pins_what_the_dev_lock_pins() -> None:
    """One version of each package in the image and in development."""
    dev, image = locked("requirements.lock"), locked("requirements-image.lock")
    differing = {name: (dev[name][0], image[name][0]) for name in image
                 if name in dev and dev[name][0] != image[name][0]}
    assert differing == {}


def test_installs_go_through_the_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements.lock" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    build = (ROOT / "deploy" / "docker" / "image-build.sh").read_text()
    assert "pip install --require-hashes --no-deps -r requirements-image.lock" in build
