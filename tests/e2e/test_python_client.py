"""The client package against the real services: two replicas each of auth, account and
transfer, started in-process on the harness' PostgreSQL and Redis Cluster. The asyncio and the
blocking facades, a transfer sent twice with one idempotency key, read-your-writes, errors; the
example script; and the wheel pip builds from clients/python, installed alone and used."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from cachebank_client import AsyncBankClient, BankClient, BearerToken, Money
from cachebank_client.errors import NotFound, Unauthenticated

from tests.e2e.conftest import PASSWORD, Bank

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
EXAMPLE = CLIENT / "examples" / "balance_and_transfer.py"


async def test_read_transfer_twice_with_one_key_and_read_your_write(bank: Bank) -> None:
    alice, bob = await bank.customer(deposit=10_000), await bank.customer()
    async with AsyncBankClient(bank.endpoints) as client:
        session = await client.login(alice.email, PASSWORD)
        assert session.user_id == alice.user_id
        client.credentials = session.credentials()
        (account,) = await client.accounts()
        assert account.account_id == alice.account_id and account.balance.minor_units == 10_000
        first = await client.balance(alice.account_id)
        again = await client.balance(alice.account_id)
        assert (first.amount, again.amount) == (Money(10_000, "EUR"), Money(10_000, "EUR"))
        assert again.from_cache and again.amount.formatted == "100.00"

        key = f"client-{uuid.uuid4().hex}"
        sent = await client.transfer(alice.account_id, bob.account_id, Money(2_500, "EUR"),
                                     idempotency_key=key, description="rent")
        repeated = await client.transfer(alice.account_id, bob.account_id, Money(2_500, "EUR"),
                                         idempotency_key=key, description="rent")
        assert repeated.transfer_id == sent.transfer_id and sent.idempotency_key == key
        assert sent.source_balance is not None
        after = await client.balance(alice.account_id, min_version=sent.source_balance.version)
        assert after.amount.minor_units == 7_500, "the money moved once"
        assert after.version >= sent.source_balance.version
        recent = await client.recent_transactions(alice.account_id,
                                                  min_version=after.version)
        assert recent.entries[0].transfer_id == sent.transfer_id
        assert recent.entries[0].amount == Money(-2_500, "EUR")
        page = await client.transfers()
        assert [t.transfer_id for t in page.transfers] == [sent.transfer_id]

        with pytest.raises(NotFound):  # another user's account looks like a missing one
            await client.balance(bob.account_id)
        await client.logout()
        with pytest.raises(Unauthenticated):
            await client.balance(alice.account_id)


async def test_the_blocking_client_and_per_call_credentials(bank: Bank) -> None:
    alice, bob = await bank.customer(deposit=5_000), await bank.customer(deposit=100)

    def flow() -> tuple[int, int]:
        with BankClient(bank.endpoints) as client:
            as_alice = client.login(alice.email, PASSWORD).credentials()
            as_bob = client.login(bob.email, PASSWORD).credentials()
            client.transfer(alice.account_id, bob.account_id, Money(1_000, "EUR"),
                            idempotency_key=str(uuid.uuid4()), credentials=as_alice)
            with pytest.raises(Unauthenticated):
                client.balance(alice.account_id, credentials=BearerToken("not.a.token"))
            mine = client.balance(alice.account_id, credentials=as_alice)
            theirs = client.balance(bob.account_id, credentials=as_bob)
            return mine.amount.minor_units, theirs.amount.minor_units

    assert await asyncio.to_thread(flow) == (4_000, 1_100)


async def test_sessions_are_revoked_one_or_all(bank: Bank) -> None:
    alice, bob = await bank.customer(), await bank.customer()
    async with AsyncBankClient(bank.endpoints) as client:
        first, second, third = [await client.login(alice.email, PASSWORD) for _ in range(3)]
        assert first.device_token
        again = await client.login(alice.email, PASSWORD, device_token=first.device_token)
        assert again.device_token and again.device_token != first.device_token
        as_bob = (await client.login(bob.email, PASSWORD)).credentials()
        with pytest.raises(NotFound):  # someone else's session
            await client.revoke_session(first.session_id, credentials=as_bob)
        await client.revoke_session(first.session_id, credentials=second.credentials())
        with pytest.raises(Unauthenticated):
            await client.accounts(credentials=first.credentials())
        ended = await client.revoke_all_sessions(PASSWORD, keep_current=True,
                                                 credentials=second.credentials())
        assert ended == 2  # third and again
        assert await client.accounts(credentials=second.credentials())
        with pytest.raises(Unauthenticated):
            await client.accounts(credentials=third.credentials())


async def _run_example(bank: Bank, env: dict[str, str], email: str, to: str
                       ) -> tuple[int, str, str]:
    endpoints = bank.endpoints
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--email", email, "--to", to, "--amount", "300",
        "--account", endpoints.account, "--transfer", endpoints.transfer,
        "--auth", endpoints.auth, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd="/")
    out, err = await asyncio.wait_for(process.communicate(f"{PASSWORD}\n".encode()), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_example_runs(bank: Bank) -> None:
    alice, bob = await bank.customer(deposit=1_000), await bank.customer()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'gen'}:{CLIENT / 'src'}"}
    code, out, err = await _run_example(bank, env, alice.email, bob.account_id)
    assert code == 0, out + err
    assert "balance now 7.00 EUR" in out


@pytest.mark.timeout(900)
async def test_the_wheel_installs_with_pip_and_carries_the_stubs(
        bank: Bank, tmp_path: Path) -> None:
    build = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                         "--wheel-dir", str(tmp_path / "dist"), str(CLIENT)],
        capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("cachebank_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert {"bank/v1/account_pb2.py", "bank/v1/transfer_pb2_grpc.py", "bank/v1/account_pb2.pyi",
            "cachebank_client/client.py", "cachebank_client/py.typed"} <= names
    assert "Requires-Dist: grpcio>=" in metadata and "Requires-Dist: protobuf" in metadata
    install = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                         "--target", str(tmp_path / "site"), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr
    # Only the installed wheel: neither the repository nor gen/ is on the path.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    alice, bob = await bank.customer(deposit=1_000), await bank.customer()
    code, out, err = await _run_example(bank, env, alice.email, bob.account_id)
    assert code == 0, out + err
    assert "balance now 7.00 EUR" in out
