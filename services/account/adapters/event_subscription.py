"""Redis sharded pub/sub for the balance-changed partitions.

One plain connection per master, subscribed (SSUBSCRIBE, one channel per command since each
channel has its own slot) to the partition channels whose slots that master owns. Any trouble on
any connection (an error, a slot moving away, a node that stops answering pings) ends the whole
subscription with `SubscriptionLost`: the consumer reopens it on the current topology and catches
up from the outbox, so there is exactly one recovery path.

Nothing here waits on Redis without a bound: opening (the layout, the connections, the
subscriptions) has a deadline of its own, and a connection that stays silent is pinged every
`liveness_s / 3` and given up after `liveness_s` without an answer (a hung node: its socket stays
open and quiet, so only a ping tells).

redis-py's `ClusterPubSub` was not used: its `get_sharded_message` polls the per-node
connections one after another (a message on one node waits for the others' timeouts), and it
reconnects and resubscribes silently, while the consumer must know about every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.task_stopping import stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    channel: str
    data: bytes | None  # None: the channel was (re)subscribed; messages may have been missed


class SubscriptionLost(Exception):
    pass


class ShardedSubscription:
    def __init__(
        self, cluster: RedisCluster, *, timeout_s: float, liveness_s: float = 3.0,
        open_deadline_s: float = 3.0, connection_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`connection_options`: the ACL user and TLS of the per-node connections
        (shared.redis_client.redis_connection_options), as the cluster client has them."""
        self._cluster = cluster
        self._connection_options = dict(connection_options or {})
        self._timeout_s = timeout_s
        self._liveness_s = liveness_s
        self._open_deadline_s = open_deadline_s
        self._queue: asyncio.Queue[Notice | BaseException] = asyncio.Queue()
        self._clients: list[Redis] = []
        self._pubsubs: list[PubSub] = []
        self._pumps: list[asyncio.Task[None]] = []

    async def open(self, channels: Sequence[str], *, refresh_topology: bool) -> None:
        try:
            async with asyncio.timeout(self._open_deadline_s):
                await self._open(channels, refresh_topology)
        except TimeoutError:
            raise SubscriptionLost(
                f"subscribing took longer than {self._open_deadline_s:g} s") from None

    async def _open(self, channels: Sequence[str], refresh_topology: bool) -> None:
        await self._cluster.initialize()
        if refresh_topology:
            # After a failover the channels' slots have a new master; the shared client only
            # notices on its next failed command, which may not have happened yet.
            await self._cluster.nodes_manager.initialize()
        by_node: dict[tuple[str, int], list[str]] = defaultdict(list)
        for channel in channels:
            node = self._cluster.get_node_from_key(channel)
            if node is None:
                raise SubscriptionLost(f"no node serves {channel}")
            by_node[(node.host, int(node.port))].append(channel)
        for (host, port), node_channels in by_node.items():
            client = Redis(
                host=host, port=port, socket_connect_timeout=self._timeout_s,
                socket_timeout=max(self._timeout_s, 1.0), retry=Retry(NoBackoff(), 0),
                decode_responses=False, **self._connection_options,
            )
            self._clients.append(client)
            pubsub = client.pubsub()
            self._pubsubs.append(pubsub)
            for channel in node_channels:
                await pubsub.ssubscribe(channel)
            self._pumps.append(
                asyncio.create_task(self._pump(pubsub, f"{host}:{port}"), name=f"events-{port}")
            )

    async def receive(self) -> Notice:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise SubscriptionLost(str(item)) from item
        return item

    async def close(self) -> None:
        await stop_tasks(self._pumps)
        # Closing says goodbye on the socket; a hung node never reads it: bounded too.
        for pubsub in self._pubsubs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(),  # type: ignore[no-untyped-call]
                                       self._timeout_s)
        for client in self._clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self._timeout_s)
        self._pumps.clear()
        self._pubsubs.clear()
        self._clients.clear()

    async def _pump(self, pubsub: PubSub, node: str) -> None:
        try:
            last_heard = time.monotonic()
            ping_sent: float | None = None
            while True:
                message = await pubsub.get_message(timeout=min(1.0, self._liveness_s / 3))
                now = time.monotonic()
                if message is None:
                    if ping_sent is None and now - last_heard >= self._liveness_s / 3:
                        await pubsub.ping()
                        ping_sent = now
                    elif ping_sent is not None and now - ping_sent > self._liveness_s:
                        raise SubscriptionLost(f"{node} stopped answering pings")
                    continue
                last_heard, ping_sent = now, None
                kind = message["type"]
                if kind == "smessage":
                    self._queue.put_nowait(Notice(_text(message["channel"]), message["data"]))
                elif kind == "ssubscribe":
                    self._queue.put_nowait(Notice(_text(message["channel"]), None))
                elif kind == "sunsubscribe":
                    raise SubscriptionLost(f"{node} dropped {_text(message['channel'])}")
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # reported to the consumer, which reconnects
            self._queue.put_nowait(err)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
