"""bankctl against the real services and the harness' PostgreSQL and Redis Cluster: log in,
balances, a transfer with a chosen idempotency key sent twice, the transfer list, logout; and
the cache check, which reports equal entries as ok, an older one as stale, and fails on an
entry that disagrees with PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bankctl import cache_check
from bankctl.__main__ import main
from services.account.service_layer.cache_layout import balance_data, balance_key
from shared.cache.entry import encode_value
from shared.config import Settings
from tests.e2e.conftest import PASSWORD, Bank

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _settings(base: Settings, bank: Bank) -> Settings:
    e = bank.endpoints
    return dataclasses.replace(base, account_target=e.account, transfer_target=e.transfer,
                               auth_target=e.auth)


async def bankctl(settings: Settings, session: Path, *argv: str, stdin: str = ""
                  ) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(main, ["--session-file", str(session), *argv],
                                   settings=settings, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


async def test_login_balances_transfer_list_logout(base_settings: Settings, bank: Bank,
                                                   tmp_path: Path) -> None:
    settings, session = _settings(base_settings, bank), tmp_path / "session.json"
    alice, bob = await bank.customer(deposit=9_000), await bank.customer()
    code, out = await bankctl(settings, session, "balances")
    assert code == 1, "not logged in yet"
    code, out = await bankctl(settings, session, "login", "--email", alice.email,
                              "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and alice.user_id in out
    assert session.stat().st_mode & 0o777 == 0o600
    code, out = await bankctl(settings, session, "balances")
    assert code == 0 and f"{alice.account_id}  90.00 EUR" in out
    key = f"ops-{uuid.uuid4().hex}"
    transfer = ["transfer", "--from", alice.account_id, "--to", bob.account_id,
                "--amount", "1500", "--key", key]
    code, first = await bankctl(settings, session, *transfer)
    code_again, again = await bankctl(settings, session, *transfer)
    assert code == code_again == 0 and key in first
    assert first.split()[1] == again.split()[1], "one key, one transfer"
    code, out = await bankctl(settings, session, "balances")
    assert "75.00 EUR" in out
    code, out = await bankctl(settings, session, "transfers")
    assert code == 0 and out.count(alice.account_id) == 1 and "15.00 EUR" in out
    code, out = await bankctl(settings, session, "transfer", "--from", bob.account_id,
                              "--to", alice.account_id, "--amount", "1")
    assert code == 1, "not the caller's account"
    code, _ = await bankctl(settings, session, "logout")
    assert code == 0 and not session.exists()


async def test_logout_everywhere_ends_every_session(base_settings: Settings, bank: Bank,
                                                   tmp_path: Path) -> None:
    settings = _settings(base_settings, bank)
    here, there = tmp_path / "here.json", tmp_path / "there.json"
    alice = await bank.customer()
    for session in (here, there):
        code, _ = await bankctl(settings, session, "login", "--email", alice.email,
                                "--password-stdin", stdin=PASSWORD + "\n")
        assert code == 0
    code, _ = await bankctl(settings, here, "logout-everywhere", "--password-stdin",
                            stdin="not the password at all\n")
    assert code == 1 and here.exists()
    code, out = await bankctl(settings, here, "logout-everywhere", "--password-stdin",
                              stdin=PASSWORD + "\n")
    assert code == 0 and "2 sessions ended" in out and not here.exists()
    code, _ = await bankctl(settings, there, "balances")
    assert code == 1, "the other session ended too"


async def test_cache_check_compares_entries_with_postgres(base_settings: Settings, bank: Bank,
                                                          tmp_path: Path) -> None:
    settings, session = _settings(base_settings, bank), tmp_path / "session.json"
    alice = await bank.customer(deposit=4_200)
    await bankctl(settings, session, "login", "--email", alice.email, "--password-stdin",
                  stdin=PASSWORD + "\n")
    await bankctl(settings, session, "balances")  # fills the balance entry
    code, out = await bankctl(settings, session, "cache-check", "--email", alice.email)
    assert code == 0, out
    assert f"ok               account:{{{alice.account_id}}}:balance" in out
    assert f"session:{{{alice.user_id}}}:" in out and "live in both" in out

    redis = cache_check.open_redis(settings)
    key = balance_key(alice.account_id)
    try:
        version = int(redis.get(key).split(b"|")[0])  # type: ignore[union-attr]
        # An older version: allowed (an event or the TTL replaces it), reported.
        redis.set(key, encode_value(version - 1, alice.user_id, balance_data("EUR", 1)))
        code, out = await bankctl(settings, session, "cache-check", "--user", alice.user_id)
        assert code == 0 and "stale" in out
        # The same version with another balance: what must never happen. The check fails.
        redis.set(key, encode_value(version, alice.user_id, balance_data("EUR", 999_999)))
        code, out = await bankctl(settings, session, "cache-check", "--user", alice.user_id)
        assert code == 1 and "PROBLEM mismatch" in out and "1 problems" in out
    finally:
        redis.delete(key)
        redis.close()


def test_the_command_line_documents_itself() -> None:
    path = f"{ROOT}:{ROOT / 'gen'}:{ROOT / 'clients' / 'python' / 'src'}"
    result = subprocess.run([sys.executable, "-m", "bankctl", "--help"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": path},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for command in ("login", "balances", "transfer", "transfers", "cache-check"):
        assert command in result.stdout


