"""FakeBankServer: a real grpc.aio server answering every bank RPC of the descriptors, each as
the test scripts it, with the standard health service. The gateway's tests run it behind a real
Envoy: the status table, headers and balancing need upstream answers no real service gives on
demand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from services.gateway.descriptors import ProtoCatalog

# (request, context) -> reply; raise via `await context.abort(code, message)` for errors.
RpcBehaviour = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]


@dataclass(frozen=True)
class Received:
    method: str  # /bank.v1.AccountService/GetBalance
    request: Message
    metadata: dict[str, str]  # text metadata (the last value of a repeated key)
    deadline_s: float | None  # time remaining when the call arrived (None: no deadline)
    replica: str


class FakeBankServer:
    """Every bank.* service on one port; `behaviours[full_method]` decides the answers. An RPC
    without a behaviour answers an empty reply."""

    def __init__(self, catalog: ProtoCatalog, name: str = "fake", *,
                 behaviours: dict[str, RpcBehaviour] | None = None,
                 received: list[Received] | None = None) -> None:
        """Replicas of one service share `behaviours` and `received` when given the same ones:
        a test scripts them once and sees every call in arrival order."""
        self.catalog = catalog
        self.name = name
        self.behaviours = behaviours if behaviours is not None else {}
        self.received = received if received is not None else []
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
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        """The overall health ("" and every service), as a service reports its readiness."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *{rpc.service.full_name for rpc in self.catalog.rpcs}):
            await self._health.set(name, status)

    def _dispatcher(self, full_method: str, reply_class: type[Message]
                    ) -> Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            metadata = {k: v for k, v in context.invocation_metadata() or ()
                        if isinstance(v, str)}
            self.received.append(Received(full_method, request, metadata,
                                          context.time_remaining(), self.name))
            behaviour = self.behaviours.get(full_method)
            if behaviour is None:
                return reply_class()
            return await behaviour(request, context)

        return handle

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self._server.stop(0)
