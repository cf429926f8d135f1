"""One request of each operation, over gRPC (the services directly) or HTTP (the Envoy edge).
Every call returns where a read was served from."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import grpc
from bank.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    transfer_pb2,
    transfer_pb2_grpc,
)

from bench.workload import Op

CACHE, DATABASE, NOT_A_READ = "cache", "database", "none"


class RequestFailed(Exception):
    """A request that did not succeed; `kind` is what the report counts ("http 429", ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """Where the load goes: via "grpc" (the services) or "edge" (HTTP through Envoy)."""

    via: str
    # HTTP: the edge's address.
    base_urls: tuple[str, ...] = ()
    account_target: str = ""
    transfer_target: str = ""
    auth_target: str = ""
    timeout_s: float = 10.0

    def describe(self) -> str:
        if self.via == "grpc":
            return (f"gRPC straight to the services (account {self.account_target}, "
                    f"transfer {self.transfer_target}, auth {self.auth_target})")
        return f"HTTP through the {self.via} at {', '.join(self.base_urls)}"


@dataclass
class Request:
    op: Op
    account_id: str
    token: str
    email: str = ""
    password: str = ""
    to_account_id: str = ""
    amount_minor: int = 0


class Driver(Protocol):
    async def open(self, connections: int) -> None: ...

    async def close(self) -> None: ...

    async def call(self, request: Request) -> tuple[str, str | None]:
        """(source, new token after a login); raises RequestFailed."""
        ...


def _source_from_enum(value: int) -> str:
    if value == account_pb2.READ_SOURCE_CACHE:
        return CACHE
    if value == account_pb2.READ_SOURCE_DATABASE:
        return DATABASE
    return NOT_A_READ


def _source_from_json(body: bytes) -> str:
    # A substring test instead of json.loads: the client's CPU is part of the 2-core budget.
    if b'"READ_SOURCE_CACHE"' in body:
        return CACHE
    if b'"READ_SOURCE_DATABASE"' in body:
        return DATABASE
    return NOT_A_READ


class GrpcDriver:
    def __init__(self, target: Target) -> None:
        self._target = target
        self._channels: list[grpc.aio.Channel] = []

    async def open(self, connections: int) -> None:
        # Client-side round robin over the replicas, as internal callers do.
        options = [("grpc.lb_policy_name", "round_robin")]
        account = grpc.aio.insecure_channel(self._target.account_target, options=options)
        transfer = grpc.aio.insecure_channel(self._target.transfer_target, options=options)
        auth = grpc.aio.insecure_channel(self._target.auth_target, options=options)
        self._channels = [account, transfer, auth]
        # The generated stubs are untyped; Any keeps that out of mypy --strict.
        stubs: dict[str, Any] = {
            "account": account_pb2_grpc.AccountServiceStub,
            "transfer": transfer_pb2_grpc.TransferServiceStub,
            "auth": auth_pb2_grpc.AuthServiceStub,
        }
        self._accounts = stubs["account"](account)
        self._transfers = stubs["transfer"](transfer)
        self._auth = stubs["auth"](auth)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def call(self, request: Request) -> tuple[str, str | None]:
        metadata = (("authorization", f"Bearer {request.token}"),)
        timeout = self._target.timeout_s
        try:
            if request.op is Op.BALANCE:
                balance = await self._accounts.GetBalance(
                    account_pb2.GetBalanceRequest(account_id=request.account_id),
                    metadata=metadata, timeout=timeout)
                return _source_from_enum(balance.source), None
            if request.op is Op.RECENT:
                recent = await self._accounts.ListRecentTransactions(
                    account_pb2.ListRecentTransactionsRequest(account_id=request.account_id),
                    metadata=metadata, timeout=timeout)
                return _source_from_enum(recent.source), None
            if request.op is Op.TRANSFER:
                await self._transfers.CreateTransfer(
                    transfer_pb2.CreateTransferRequest(
                        from_account_id=request.account_id,
                        to_account_id=request.to_account_id,
                        amount=common_pb2.Money(minor_units=request.amount_minor, currency="EUR"),
                        idempotency_key=str(uuid.uuid4()),
                        description="bench",
                    ),
                    metadata=metadata, timeout=timeout)
                return NOT_A_READ, None
            login = await self._auth.Login(
                auth_pb2.LoginRequest(email=request.email, password=request.password),
                timeout=timeout)
            return NOT_A_READ, login.token
        except grpc.aio.AioRpcError as err:
            raise RequestFailed(f"grpc {err.code().name}") from None


class HttpDriver:
    def __init__(self, target: Target) -> None:
        self._target = target
        self._sessions: list[aiohttp.ClientSession] = []
        self._next = 0

    async def open(self, connections: int) -> None:
        if not self._target.base_urls:
            raise ValueError("an HTTP target needs at least one base URL")
        per_url = max(1, connections // len(self._target.base_urls) + 1)
        for url in self._target.base_urls:
            # ssl=False: the local edge's certificate is self-signed (curl -k in the README).
            connector = aiohttp.TCPConnector(limit=per_url, ssl=False)
            self._sessions.append(aiohttp.ClientSession(
                base_url=url,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._target.timeout_s),
                skip_auto_headers=("User-Agent",),
            ))

    async def close(self) -> None:
        for session in self._sessions:
            await session.close()
        self._sessions = []

    @property
    def _session(self) -> aiohttp.ClientSession:
        self._next = (self._next + 1) % len(self._sessions)
        return self._sessions[self._next]

    async def call(self, request: Request) -> tuple[str, str | None]:
        auth = {"authorization": f"Bearer {request.token}"}
        try:
            if request.op is Op.BALANCE:
                status, body = await self._get(f"/v1/accounts/{request.account_id}/balance", auth)
            elif request.op is Op.RECENT:
                status, body = await self._get(
                    f"/v1/accounts/{request.account_id}/transactions:recent", auth)
            elif request.op is Op.TRANSFER:
                payload = {
                    "fromAccountId": request.account_id,
                    "toAccountId": request.to_account_id,
                    "amount": {"minorUnits": str(request.amount_minor), "currency": "EUR"},
                    "description": "bench",
                }
                headers = {**auth, "idempotency-key": str(uuid.uuid4())}
                status, body = await self._post("/v1/transfers", payload, headers)
            else:
                status, body = await self._post(
                    "/v1/auth/login", {"email": request.email, "password": request.password}, {})
        except (TimeoutError, aiohttp.ClientError) as err:
            kind = "timeout" if isinstance(err, TimeoutError) else type(err).__name__
            raise RequestFailed(kind) from None
        if status != 200:
            raise RequestFailed(f"http {status}")
        if request.op is Op.LOGIN:
            return NOT_A_READ, str(json.loads(body)["token"])
        return _source_from_json(body), None

    async def _get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._session.get(path, headers=headers) as response:
            return response.status, await response.read()

    async def _post(self, path: str, payload: object,
                    headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._session.post(path, json=payload, headers=headers) as response:
            return response.status, await response.read()


def driver_for(target: Target) -> Driver:
    return GrpcDriver(target) if target.via == "grpc" else HttpDriver(target)
