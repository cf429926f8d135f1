"""Fakes that ship beside the real adapters, for tests that exercise the gateway alone.

- `FakeGate`: the SessionGate contract in memory (tokens registered by the test).
- `ScriptedUpstreams`: the GrpcUpstreams contract without a network, answers chosen per RPC.
- `FakeBankServer`: a real grpc.aio server serving every bank.* RPC from the descriptors, with
  answers chosen per RPC; for tests of the real channels, deadlines and status mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from services.gateway.descriptors import ProtoCatalog
from services.gateway.errors import unauthenticated
from services.gateway.session_gate import WINDOW_S, GateResult
from shared.auth_context import Caller
from shared.rate_limit import (
    ADDRESS_SCOPE,
    USER_SCOPE,
    InMemoryRateLimiter,
    LimitDecision,
)

# (request, context) -> reply; raise via `await context.abort(code, message)` for errors.
RpcBehaviour = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]


class FakeGate:
    def __init__(self, limit_per_minute: int = 1000) -> None:
        self.sessions: dict[str, Caller] = {}
        self.versions: dict[tuple[str, str, str], int] = {}
        self._limiter = InMemoryRateLimiter(limit_per_minute, WINDOW_S)

    async def check_session(self, token: str, account_id: str | None) -> GateResult:
        caller = self.sessions.get(token)
        if caller is None:
            raise unauthenticated()
        limit = self._limiter.check(caller.user_id, USER_SCOPE)
        version = self.versions.get((caller.user_id, caller.session_id, account_id or ""), 0)
        return GateResult(caller, limit, version)

    async def check_address(self, address: str) -> LimitDecision:
        return self._limiter.check("ip:" + address, ADDRESS_SCOPE)

    async def remember_write(self, caller: Caller, account_id: str, version: int) -> None:
        key = (caller.user_id, caller.session_id, account_id)
        self.versions[key] = max(version, self.versions.get(key, 0))


@dataclass
class ScriptedUpstreams:
    """Answers by gRPC method path; an RPC without a script answers an empty reply."""

    catalog: ProtoCatalog
    scripts: dict[str, Callable[[Message], Awaitable[Message]]] = field(default_factory=dict)
    calls: list[tuple[str, Message, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    async def call(self, full_method: str, request: Message,
                   metadata: tuple[tuple[str, str], ...]) -> Message:
        self.calls.append((full_method, request, metadata))
        script = self.scripts.get(full_method)
        if script is not None:
            return await script(request)
        rpc = next(r for r in self.catalog.rpcs if r.full_method == full_method)
        reply: Message = GetMessageClass(rpc.method.output_type)()
        return reply

    async def readiness(self) -> dict[str, bool]:
        return {name: True for name in {r.service.full_name for r in self.catalog.rpcs}}


class FakeBankServer:
    """Every bank.* service on one port; `behaviours[full_method]` decides the answers."""

    def __init__(self, catalog: ProtoCatalog) -> None:
        self.catalog = catalog
        self.behaviours: dict[str, RpcBehaviour] = {}
        self.received: list[tuple[str, Message, dict[str, str]]] = []
        self._server = grpc.aio.server()
        self._health = HealthServicer()
        self.port = 0

    async def start(self) -> None:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for rpc in self.catalog.rpcs:
            by_service.setdefault(rpc.service.full_name, {})[rpc.method.name] = (
                grpc.unary_unary_rpc_method_handler(
                    self._dispatcher(rpc.full_method, GetMessageClass(rpc.method.output_type)),
                    request_deserializer=GetMessageClass(rpc.method.input_type).FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                )
            )
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(name, handlers)
             for name, handlers in by_service.items()]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        for name in ("", *by_service):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _dispatcher(self, full_method: str, reply_class: type[Message]
                    ) -> Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            metadata = {k: v for k, v in context.invocation_metadata() or ()
                        if isinstance(v, str)}
            self.received.append((full_method, request, metadata))
            behaviour = self.behaviours.get(full_method)
            if behaviour is None:
                return reply_class()
            return await behaviour(request, context)

        return handle

    @property
    def target(self) -> str:
        return f"ipv4:127.0.0.1:{self.port}"

    def targets(self) -> dict[str, str]:
        return {rpc.service.full_name: self.target for rpc in self.catalog.rpcs}

    async def stop(self) -> None:
        await self._server.stop(0)
