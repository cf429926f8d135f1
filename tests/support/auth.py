"""Helpers shared by the auth integration tests (not a test module)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from shared.config import Settings
from tests.support.redis_users import as_user

PASSWORD = "glacier violet umbrella 42"
# argon2 at its cheapest: the tests exercise the flows, not the cost of hashing.
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}


def auth_settings(base: Settings, **overrides: Any) -> Settings:
    return as_user(dataclasses.replace(base, service_name="auth", **{**CHEAP_ARGON2, **overrides}),
                   "auth")


def random_address() -> str:
    """Each test logs in from its own address: the per-address counter is shared by the session."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


