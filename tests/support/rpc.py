"""gRPC call helpers for the tests that talk to a real service."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a session token."""
    return (("authorization", f"Bearer {token}"),)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call must fail with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value
