"""The users of a chaos run, through Envoy over HTTPS like any client: what they did and saw.

Each user has one account, a "writer" session (the one that makes transfers) and another session,
and acts one thing at a time at a seeded random pace:
- a transfer to another user, retried under its idempotency key (5xx, timeouts, 409 ABORTED,
  429) for up to `RETRY_FOR_S`; the key's outcome is its first definitive answer;
- a read of its balance from the writer session, or from the other session (every session of
  the writer must see its own transfers: the floors are per user);
- a login of a third session, a read with it, a logout; the token is remembered as revoked;
- a probe with a revoked token, which must stay refused.
A read's reply version is kept with the newest version the user's acknowledged transfers gave
(the writer check) and its start time (the staleness, against PostgreSQL's versions over time).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RETRY_FOR_S = 20.0
PASSWORD = "chaos monkey banana 77"
DEPOSIT = 10_000_000
_REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Op:
    kind: str  # transfer, read, login, logout, revoked_probe
    user: int
    started: float  # monotonic
    ended: float
    status: int  # HTTP status; 0 for no answer (connection error, timeout)

    @property
    def ok(self) -> bool:
        """Served as the system promises: a 2xx, or a refusal the request deserved."""
        if self.kind == "revoked_probe":
            return self.status == 401
        return 200 <= self.status < 300

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


@dataclass
class ChaosUser:
    index: int
    email: str
    user_id: str
    account_id: str
    writer: str = ""
    other: str = ""
    floor: int = 0  # newest source version an acknowledged transfer of this user returned
    floor_at: float = 0.0  # when that transfer was acknowledged


@dataclass
class KeyAttempt:
    """One idempotency key: every answer it got, and its outcome once definitive."""

    user: int
    key: str
    destination: str
    amount: int
    statuses: list[int] = field(default_factory=list)
    transfer_id: str = ""  # acknowledged (200)
    refused: int = 0  # a definitive 4xx


@dataclass(frozen=True)
class ReadSample:
    user: int
    account_id: str
    session: str  # writer, other, fresh
    started: float
    version: int
    floor: int  # the user's floor when the read started
    floor_at: float  # when the transfer that set it was acknowledged
    source: str  # READ_SOURCE_CACHE or READ_SOURCE_DATABASE


@dataclass
class Workload:
    edge_url: str
    ca_file: Path
    seed: int
    ops_per_user_s: float
    users: list[ChaosUser] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    keys: dict[str, KeyAttempt] = field(default_factory=dict)
    reads: list[ReadSample] = field(default_factory=list)
    revoked: list[tuple[str, float]] = field(default_factory=list)  # (token, logout acked at)
    revocation_violations: list[str] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Workload:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self._client = httpx.AsyncClient(
            base_url=self.edge_url, verify=context, timeout=_REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    # Set-up: users registered and logged in through the edge (funded by the caller).

    async def register(self, count: int) -> list[ChaosUser]:
        for index in range(count):
            email = f"chaos-{uuid.uuid4().hex[:10]}@example.com"
            reply = await self._call("POST", "/v1/auth/register", json={
                "email": email, "password": PASSWORD, "name": f"Chaos {index}"})
            body = reply.json()
            self.users.append(ChaosUser(index, email, body["userId"], body["accountId"]))
        return self.users

    async def log_in_everyone(self) -> None:
        for user in self.users:
            user.writer = await self._login(user)
            user.other = await self._login(user)

    # The run.

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._user_loop(user, stop) for user in self.users))

    async def _user_loop(self, user: ChaosUser, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.seed}-user-{user.index}")
        while not stop.is_set():
            try:
                async with asyncio.timeout(rng.expovariate(self.ops_per_user_s)):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            action = rng.random()
            if action < 0.35:
                await self._transfer(user, rng)
            elif action < 0.60:
                await self._read(user, user.writer, "writer")
            elif action < 0.85:
                await self._read(user, user.other, "other")
            elif action < 0.93:
                await self._login_read_logout(user)
            else:
                await self._probe_revoked(user, rng)

    async def _transfer(self, user: ChaosUser, rng: random.Random) -> None:
        destination = rng.choice([u for u in self.users if u is not user])
        attempt = KeyAttempt(user.index, f"chaos-{uuid.uuid4().hex}", destination.account_id,
                             rng.randint(1, 500))
        self.keys[attempt.key] = attempt
        await self.settle(attempt, RETRY_FOR_S)

    async def settle(self, attempt: KeyAttempt, retry_for_s: float) -> None:
        """Send the key's transfer until a definitive answer or `retry_for_s` has passed."""
        user = self.users[attempt.user]
        deadline = time.monotonic() + retry_for_s
        backoff = 0.1
        while not attempt.transfer_id and not attempt.refused:
            status, body, retry_after = await self._op(
                "transfer", user, "POST", "/v1/transfers",
                headers={"Authorization": f"Bearer {user.writer}",
                         "Idempotency-Key": attempt.key},
                json={"fromAccountId": user.account_id, "toAccountId": attempt.destination,
                      "amount": {"minorUnits": str(attempt.amount), "currency": "EUR"},
                      "description": "chaos"})
            attempt.statuses.append(status)
            if status == 200:
                attempt.transfer_id = body["transferId"]
                version = int(body["sourceBalance"]["version"])
                if version > user.floor:
                    user.floor, user.floor_at = version, time.monotonic()
                return
            aborted = status == 409 and body.get("code") == 10  # in progress: retry
            if 400 <= status < 500 and status not in (408, 429) and not aborted:
                attempt.refused = status
                return
            if time.monotonic() + backoff > deadline:
                return
            await asyncio.sleep(retry_after or backoff)
            backoff = min(backoff * 2, 2.0)

    async def _read(self, user: ChaosUser, token: str, session: str) -> None:
        floor, floor_at, started = user.floor, user.floor_at, time.monotonic()
        status, body, _ = await self._op(
            "read", user, "GET", f"/v1/accounts/{user.account_id}/balance",
            headers={"Authorization": f"Bearer {token}"})
        if status == 200:
            self.reads.append(ReadSample(user.index, user.account_id, session, started,
                                         int(body["version"]), floor, floor_at,
                                         str(body.get("source", ""))))

    async def _login_read_logout(self, user: ChaosUser) -> None:
        status, body, _ = await self._op("login", user, "POST", "/v1/auth/login",
                                         json={"email": user.email, "password": PASSWORD})
        if status != 200:
            return
        token = str(body["token"])
        await self._read(user, token, "fresh")
        status, _, _ = await self._op("logout", user, "POST", "/v1/auth/logout", json={},
                                      headers={"Authorization": f"Bearer {token}"})
        if status == 200:
            self.revoked.append((token, time.monotonic()))

    async def _probe_revoked(self, user: ChaosUser, rng: random.Random) -> None:
        if not self.revoked:
            return
        token, revoked_at = rng.choice(self.revoked)
        status, _, _ = await self._op(
            "revoked_probe", user, "GET", f"/v1/accounts/{user.account_id}/balance",
            headers={"Authorization": f"Bearer {token}"})
        if 200 <= status < 300:
            self.revocation_violations.append(
                f"a session logged out {time.monotonic() - revoked_at:.1f} s earlier was"
                f" accepted (user {user.index})")

    # HTTP.

    async def _login(self, user: ChaosUser) -> str:
        for _ in range(20):
            status, body, _ = await self._op("login", user, "POST", "/v1/auth/login",
                                             json={"email": user.email, "password": PASSWORD})
            if status == 200:
                return str(body["token"])
            await asyncio.sleep(0.5)
        raise RuntimeError(f"user {user.index} cannot log in")

    async def _op(self, kind: str, user: ChaosUser, method: str, path: str,
                  **options: Any) -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        try:
            reply = await self._request(method, path, **options)
        except httpx.HTTPError:
            self.ops.append(Op(kind, user.index, started, time.monotonic(), 0))
            return 0, {}, 0.0
        self.ops.append(Op(kind, user.index, started, time.monotonic(), reply.status_code))
        try:
            body = reply.json()
        except ValueError:
            body = {}
        retry_after = float(reply.headers.get("retry-after", "0") or 0)
        return reply.status_code, body if isinstance(body, dict) else {}, retry_after

    async def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        reply = await self._request(method, path, **options)
        reply.raise_for_status()
        return reply

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        assert self._client is not None
        return await self._client.request(method, path, **options)
