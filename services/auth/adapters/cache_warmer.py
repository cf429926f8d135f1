"""Asking the account service to warm a user's cache after a login: its internal WarmCache RPC,
called with the new session's token and never awaited by the login.

Why an RPC rather than an event: the warm-up needs one account replica to do it once, with the
caller's identity (the request gate checks the session as for any call, and the account service
then reads only that user's accounts); an event on the balance channels would reach every
replica, and pub/sub would lose it while one reconnects. The call is fire-and-forget with a short
deadline: at most `max_in_flight` at once (a login flood never queues warm-ups), failures are
counted and otherwise ignored (the reads fill the cache themselves).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from bank.v1 import account_pb2, account_pb2_grpc

from shared.metrics import CACHE_WARMUP_CALLS
from shared.task_stopping import stop_tasks

log = logging.getLogger(__name__)


class GrpcCacheWarmer:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0,
                 max_in_flight: int = 64) -> None:
        self._channel = channel
        # The generated stub is untyped; Any keeps that out of mypy --strict.
        self._stub: Any = account_pb2_grpc.AccountServiceStub(channel)
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()

    def warm(self, token: str) -> None:
        if len(self._in_flight) >= self._max_in_flight:
            CACHE_WARMUP_CALLS.labels("skipped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._call(token), name="warm-cache")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _call(self, token: str) -> None:
        try:
            await self._stub.WarmCache(account_pb2.WarmCacheRequest(),
                                       metadata=(("authorization", f"Bearer {token}"),),
                                       timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            CACHE_WARMUP_CALLS.labels("failed").inc()
            log.debug("cache warm-up failed: %s", err.code().name)
            return
        CACHE_WARMUP_CALLS.labels("done").inc()

    async def wait_idle(self) -> None:
        """Until every warm-up in flight has ended (tests, and a drain)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def aclose(self) -> None:
        await stop_tasks(list(self._in_flight))
        await self._channel.close()
