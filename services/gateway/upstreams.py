"""grpc.aio channels to the services: one per target, reused by every request.

- Client-side round robin (`round_robin`) over every address the target resolves to: `dns:///`
  names in Kubernetes (a headless Service lists every pod), `ipv4:a:p1,a:p2` locally. A
  Kubernetes Service balances connections, not HTTP/2 requests, so the balancing must be here.
- A deadline on every call (settings.grpc_deadline_s).
- Retries (gRPC's retry policy, from a service config) only for RPCs whose proto says
  `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`, and only on UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from bank.v1 import auth_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.descriptors import Rpc
from shared.auth_context import Caller
from shared.config import Settings
from shared.errors import Unauthenticated

Metadata = tuple[tuple[str, str], ...]

# Which Settings field names the target of each service.
_TARGET_SETTINGS = {
    "bank.v1.AccountService": "account_target",
    "bank.v1.TransferService": "transfer_target",
    "bank.v1.AuthService": "auth_target",
}
_VALIDATE_SESSION = "/bank.v1.AuthService/ValidateSession"
_HEALTH_TIMEOUT_S = 1.0


def targets_from_settings(settings: Settings) -> dict[str, str]:
    return {service: getattr(settings, name) for service, name in _TARGET_SETTINGS.items()}


def service_config(rpcs: Sequence[Rpc]) -> str:
    retryable = [
        {"service": rpc.service.full_name, "method": rpc.method.name}
        for rpc in rpcs if rpc.idempotent
    ]
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retryable:
        config["methodConfig"] = [{
            "name": retryable,
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.02s",
                "maxBackoff": "0.2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    return json.dumps(config)


def channel_options(rpcs: Sequence[Rpc]) -> list[tuple[str, Any]]:
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config", service_config(rpcs)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class GrpcUpstreams:
    def __init__(self, targets: Mapping[str, str], rpcs: Sequence[Rpc], deadline_s: float) -> None:
        missing = {rpc.service.full_name for rpc in rpcs} - set(targets)
        if missing:
            raise ValueError(f"no gRPC target configured for {sorted(missing)}")
        self._targets = dict(targets)
        self._rpcs = list(rpcs)
        self._deadline_s = deadline_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._health: dict[str, health_pb2_grpc.HealthStub] = {}

    async def start(self) -> None:
        """Channels bind to the running event loop, so they are made here, not in __init__."""
        by_target: dict[str, list[Rpc]] = {}
        for rpc in self._rpcs:
            by_target.setdefault(self._targets[rpc.service.full_name], []).append(rpc)
        for target, rpcs in by_target.items():
            channel = grpc.aio.insecure_channel(target, options=channel_options(rpcs))
            self._channels[target] = channel
            for rpc in rpcs:
                self._calls[rpc.full_method] = channel.unary_unary(
                    rpc.full_method,
                    request_serializer=_serialize,
                    response_deserializer=_deserializer(rpc),
                )
                self._health[rpc.service.full_name] = health_pb2_grpc.HealthStub(channel)

    async def call(self, full_method: str, request: Message, metadata: Metadata) -> Message:
        """Raises grpc.aio.AioRpcError for any non-OK status (the caller maps it to HTTP)."""
        reply: Message = await self._calls[full_method](
            request, timeout=self._deadline_s, metadata=metadata
        )
        return reply

    async def validate_session(self, token: str) -> Caller:
        try:
            # The token goes as metadata too: the services' interceptor authenticates every
            # non-public RPC, ValidateSession included.
            reply = await self.call(_VALIDATE_SESSION,
                                    auth_pb2.ValidateSessionRequest(token=token),
                                    (("authorization", "Bearer " + token),))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(err.details() or "session token is invalid") from None
            raise
        assert isinstance(reply, auth_pb2.ValidateSessionResponse)
        return Caller(reply.user_id, reply.session_id)

    async def readiness(self) -> dict[str, bool]:
        """Each upstream service's gRPC health (SERVING or not), checked concurrently."""
        names = sorted(self._health)
        answers = await asyncio.gather(*(self._serving(name) for name in names))
        return dict(zip(names, answers, strict=True))

    async def _serving(self, service: str) -> bool:
        try:
            reply = await self._health[service].Check(
                health_pb2.HealthCheckRequest(service=service), timeout=_HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _deserializer(rpc: Rpc) -> Any:
    from google.protobuf.message_factory import GetMessageClass

    return GetMessageClass(rpc.method.output_type).FromString
