"""A deadline on every call: interceptors that give a call without a timeout the channel's
default (ChannelSettings.timeout_s); a call's own timeout stays as it is.

Not the service config's `timeout`: grpc-python applies that one wrongly (grpc/grpc#34547,
#40633: a call fails with DEADLINE_EXCEEDED at once under a short timeout, and the deadline
never reaches the server), so the channels set it on the call itself, where it is propagated
as `grpc-timeout`. The bank's RPCs are all unary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class DefaultDeadline(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def intercept_unary_unary(self, continuation: Callable[..., Any],
                              client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        details = client_call_details
        if details.timeout is None:
            details = _CallDetails(details.method, self._timeout_s, details.metadata,
                                   details.credentials, getattr(details, "wait_for_ready", None),
                                   getattr(details, "compression", None))
        return continuation(details, request)


class AsyncDefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        details = client_call_details
        if details.timeout is None:
            details = details._replace(timeout=self._timeout_s)
        return await continuation(details, request)
