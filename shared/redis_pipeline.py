"""The services' hot-path Redis Cluster client: ONE pipelined connection per primary.

Why not redis-py's cluster client on this path: it takes a pooled connection per command, routes
through several layers, writes each command with its own system call, and drops the connection
on a timeout (so a slow moment turns into reconnect storms). Measured on the session gate's
script at 32 concurrent calls: ~58 us of client CPU per call with redis-py (+hiredis), ~15 us
here, where the commands issued in one event-loop tick leave in one write and replies are
matched in order.

Every call has a hard deadline (`timeout_s`), connecting and the CLUSTER SLOTS refresh included:
a hung Redis costs a caller at most that, never a stalled request. A timed-out reply is
abandoned without closing the connection, so the stream stays in step when Redis wakes up.

Topology events: a primary whose connection drops, or whose calls time out, becomes a suspect;
while there is one, the client re-reads CLUSTER SLOTS every `watch_interval_s` and pings the
suspect. A node whose call timed out is also unresponsive: further calls to it fail at once,
without waiting for their deadline, until a ping is answered, so a hung node costs a caller one
deadline at most, then nothing (its slots fall back until it answers or is failed over).
Listeners (`add_topology_listener`) hear of the slots whose primary changed, and of the slots of
a primary that was reconnected after losing its connection (it may have restarted with older
data): a failover or a restart can lose acknowledged writes there, so owners of cached data
repair those slots. They also hear when a suspect answers again (a hung node woke up; its data
is intact, but writes sent to it meanwhile failed): circuit breakers need not wait for their next
probe. A CLUSTERDOWN reply (a master failed and is not replaced yet: every node refuses every
slot) makes the node a suspect too, and the first call that succeeds afterwards is told as every
slot answering again. The watch's probe is a keyed read, which CLUSTERDOWN refuses.

Scope is deliberately small: single-key commands and EVALSHA (loading the script on NOSCRIPT),
slot routing from CLUSTER SLOTS, MOVED (re-route and retry: the command did not run), ASK, AUTH
with an ACL user, and TLS. Anything else is an error for the caller, which falls back to
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from redis.crc import key_slot

_SLOTS = 16384
ALL_SLOTS = frozenset(range(_SLOTS))
_MAX_WAITING = 10_000  # replies owed by one connection before it is considered wedged
_REFRESH_MIN_INTERVAL_S = 0.5
_MAX_REDIRECTIONS = 3
_PING = b"*1\r\n$4\r\nPING\r\n"

Node = tuple[str, int]


@dataclass(frozen=True)
class TopologyEvent:
    """`slots`: the slots concerned. `writes_lost`: writes there may be missing without their
    writers knowing to retry: acknowledged ones lost (a failover, a primary reconnected after
    its connection dropped) or, after CLUSTERDOWN, refused everywhere while a master was being
    replaced. Otherwise a node that did not answer answers again: its data is intact, and the
    writes sent to it meanwhile failed in their callers' hands."""

    slots: frozenset[int]
    reason: str
    writes_lost: bool


TopologyListener = Callable[[TopologyEvent], None]

log = logging.getLogger(__name__)


class RedisCallError(Exception):
    """Redis could not answer (connection, timeout, cluster state); script errors are raised as
    hiredis.ReplyError."""


class RedisCallTimeout(RedisCallError):
    """No reply within the deadline: the node may be hung."""


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@dataclass(frozen=True)
class RedisCredentials:
    """An ACL user; the password stays out of reprs (and so out of logs and tracebacks)."""

    username: str
    password: str = field(repr=False)


def encode_command(args: Sequence[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Pipe(asyncio.Protocol):
    """One connection: commands written in batches, replies handed out in order."""

    def __init__(self, on_lost: Callable[[], None] | None = None) -> None:
        self._on_lost = on_lost
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike: no isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                self.close()  # the stream is unreadable; connection_lost fails the waiters
                return
            if reply is False:
                return
            if not self._waiting:
                self.close()  # a reply nobody asked for: out of step, start afresh
                return
            waiter = self._waiting.popleft()
            if waiter.done():
                continue  # its caller timed out; the reply is dropped, the stream stays in step
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._on_lost is not None:
            self._on_lost()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisCallError(f"connection lost: {exc!r}"))

    def send(self, *commands: bytes) -> list[asyncio.Future[Any]]:
        if self.closed or self._transport is None:
            raise RedisCallError("connection closed")
        if len(self._waiting) > _MAX_WAITING:
            self.close()
            raise RedisCallError("connection wedged: too many replies outstanding")
        loop = asyncio.get_running_loop()
        if not self._outgoing:
            loop.call_soon(self._flush)
        futures = []
        for command in commands:
            self._outgoing.append(command)
            future: asyncio.Future[Any] = loop.create_future()
            self._waiting.append(future)
            futures.append(future)
        return futures

    def _flush(self) -> None:
        if self._outgoing and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ClusterPipeline:
    def __init__(
        self,
        startup_nodes: Sequence[Node],
        timeout_s: float,
        *,
        credentials: RedisCredentials | None = None,
        tls: ssl.SSLContext | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: a span per command (shared/tracing.py); None costs nothing."""
        self._startup_nodes = list(startup_nodes)
        self._timeout_s = timeout_s
        self._credentials = credentials
        self._tls = tls
        self._tracer = tracer
        self._slots: list[Node] | None = None  # routing: the layout, patched by MOVED
        self._layout: list[Node] | None = None  # as CLUSTER SLOTS last said
        self._pipes: dict[Node, _Pipe] = {}
        self._connecting: dict[Node, asyncio.Future[_Pipe]] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._last_refresh = 0.0
        self.topology_changes = 0  # bumped when a refresh finds another slot layout
        self.timeouts = 0  # callers that waited a whole deadline (the client's upkeep not counted)
        self.watch_interval_s = 0.25
        self._listeners: list[TopologyListener] = []
        self._suspects: set[Node] = set()  # lost or timing out: watched until they answer
        self._lost: set[Node] = set()  # connection dropped: reconnecting is a topology event
        self._unresponsive: set[Node] = set()  # timed out: calls fail at once until a ping
        self._cluster_down = False  # a node answered CLUSTERDOWN; no keyed call succeeded since
        self._probe_keys: dict[Node, str] = {}
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def add_topology_listener(self, listener: TopologyListener) -> None:
        self._listeners.append(listener)

    @property
    def suspects(self) -> frozenset[Node]:
        """Primaries that lost their connection or stopped answering, not yet back."""
        return frozenset(self._suspects)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply. Raises RedisCallError, or hiredis.ReplyError from the script."""
        command = encode_command(["EVALSHA", script.sha, len(keys), *keys, *args])
        if self._tracer is not None:
            with self._span("EVALSHA", keys[0]):
                return await self._routed(keys[0], command, script)
        return await self._routed(keys[0], command, script)

    async def execute(self, key: str, *args: Any) -> Any:
        """A single-key command (`execute(key, "GET", key)`), routed by `key`."""
        if self._tracer is not None:
            with self._span(str(args[0]), key):
                return await self._routed(key, encode_command(args))
        return await self._routed(key, encode_command(args))

    def send_now(self, key: str, *args: Any) -> asyncio.Future[Any] | None:
        """Queue a single-key command without waiting (it leaves with this tick's other
        commands); None when the layout or the connection is not ready yet (use `execute`).
        The caller must await the future or retrieve its exception; it carries the deadline."""
        if self._slots is None:
            return None
        node = self._slots[key_slot(key.encode())]
        pipe = self._pipes.get(node)
        if pipe is None or pipe.closed or node in self._unresponsive:
            return None
        try:
            (future,) = pipe.send(encode_command(args))
        except RedisCallError:
            return None
        handle = asyncio.get_running_loop().call_later(self._timeout_s, _expire, future)

        def done(_: asyncio.Future[Any]) -> None:
            handle.cancel()
            if not future.cancelled() and isinstance(future.exception(), RedisCallTimeout):
                self._timed_out(node)

        future.add_done_callback(done)
        if self._tracer is not None:
            span = self._tracer.start_span(f"redis {args[0]}", kind=SpanKind.CLIENT,
                                           attributes=_span_attributes(str(args[0]), key))
            future.add_done_callback(lambda finished: _end_span(span, finished))
        return future

    def _span(self, operation: str, key: str) -> Any:
        assert self._tracer is not None
        return self._tracer.start_as_current_span(
            f"redis {operation}", kind=SpanKind.CLIENT,
            attributes=_span_attributes(operation, key))

    async def _routed(self, key: str, command: bytes, script: Script | None = None) -> Any:
        if self._slots is None:
            await self._first_topology()
        assert self._slots is not None
        node = self._slots[key_slot(key.encode())]
        asking = False
        for _attempt in range(_MAX_REDIRECTIONS):
            try:
                return await self._call(node, command, asking=asking)
            except hiredis.ReplyError as err:
                text = str(err)
                if script is not None and text.startswith("NOSCRIPT"):
                    await self._call(node, encode_command(["SCRIPT", "LOAD", script.source]))
                    asking = False
                    continue
                redirected = redirection(text)
                if redirected is None:
                    raise
                kind, slot, target = redirected
                node = (target[0] or node[0], target[1])
                asking = kind == "ASK"
                if not asking and self._slots is not None:
                    self._slots[slot] = node  # the cluster told us; a refresh follows
                    self._refresh_soon()
        raise RedisCallError("too many redirections")

    async def _call(self, node: Node, command: bytes, *, asking: bool = False,
                    probe: bool = False, internal: bool = False) -> Any:
        """`probe`: sent even to an unresponsive node (the watch's ping). `internal`: the
        client's own upkeep (the layout), not a caller's wait."""
        if node in self._unresponsive and not probe:
            raise RedisCallTimeout(f"{node[0]}:{node[1]} is not answering")
        pipe = await self._pipe(node)
        if asking:
            _, future = pipe.send(encode_command(["ASKING"]), command)
        else:
            (future,) = pipe.send(command)
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(self._timeout_s, _expire, future)
        try:
            reply = await future
        except RedisCallTimeout:
            if not probe:
                self._timed_out(node, counted=not internal)
            raise
        except RedisCallError:
            self._suspect(node)
            raise
        except hiredis.ReplyError as err:
            if str(err).startswith("CLUSTERDOWN"):
                # The whole cluster refuses writes (a master failed and is not replaced yet):
                # writes to every slot fail until it answers again.
                self._cluster_down = True
                self._suspect(node)
            raise
        finally:
            expiry.cancel()
        if self._suspects and node in self._suspects and node not in self._lost:
            self._suspects.discard(node)
            self._unresponsive.discard(node)
            self._notify(self._slots_of(node), f"{node[0]}:{node[1]} answers again",
                         writes_lost=False)
        if self._cluster_down and not internal:
            self._cluster_down = False
            self._notify(ALL_SLOTS, "the cluster answers again after CLUSTERDOWN",
                         writes_lost=True)
        return reply

    async def _pipe(self, node: Node) -> _Pipe:
        pipe = self._pipes.get(node)
        if pipe is not None and not pipe.closed:
            return pipe
        pending = self._connecting.get(node)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(node))
            self._connecting[node] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(node, None))
        return await asyncio.shield(pending)

    async def _connect(self, node: Node) -> _Pipe:
        loop = asyncio.get_running_loop()
        try:
            _, pipe = await asyncio.wait_for(
                loop.create_connection(lambda: _Pipe(lambda: self._node_lost(node)),
                                       node[0], node[1], ssl=self._tls),
                self._timeout_s,
            )
        except (OSError, TimeoutError) as err:
            if isinstance(err, TimeoutError):
                self._unresponsive.add(node)
            self._suspect(node)  # a node we cannot reach may have been failed over
            raise RedisCallError(f"cannot connect to {node[0]}:{node[1]}: {err!r}") from None
        if self._credentials is not None:
            (hello,) = pipe.send(encode_command(
                ["AUTH", self._credentials.username, self._credentials.password]
            ))
            try:
                await asyncio.wait_for(hello, self._timeout_s)
            except (hiredis.ReplyError, RedisCallError, TimeoutError) as err:
                pipe.close()
                raise RedisCallError(f"AUTH at {node[0]}:{node[1]} failed: {err!r}") from None
        self._pipes[node] = pipe
        if node in self._lost:
            self._lost.discard(node)
            self._suspects.discard(node)
            self._unresponsive.discard(node)
            self._notify(self._slots_of(node), f"{node[0]}:{node[1]} reconnected",
                         writes_lost=True)
        return pipe

    # Topology events.

    def _timed_out(self, node: Node, *, counted: bool = True) -> None:
        self.timeouts += counted
        self._unresponsive.add(node)
        self._suspect(node)

    def _node_lost(self, node: Node) -> None:
        if not self._closing:
            self._lost.add(node)
            self._suspect(node)

    def _suspect(self, node: Node) -> None:
        if self._closing:
            return
        self._suspects.add(node)
        self._refresh_soon()
        # done(): a watch that just found nothing left may not have run its callback yet.
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._watch_suspects())
            self._watch.add_done_callback(self._watch_ended)

    def _watch_ended(self, done: asyncio.Future[None]) -> None:
        if self._watch is done:
            self._watch = None
        _ignore_result(done)

    async def _watch_suspects(self) -> None:
        """While a primary is suspect: the layout again and a ping to it, every interval. Ends
        when every suspect answers or is no longer a primary."""
        while self._suspects and not self._closing:
            await asyncio.sleep(self.watch_interval_s)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._start_refresh())
            if self._slots is not None:
                primaries = set(self.primaries())
                for node in list(self._suspects):
                    if node not in primaries:
                        self._suspects.discard(node)
                        self._lost.discard(node)
                        self._unresponsive.discard(node)
            await asyncio.gather(*(self._call(node, self._probe(node), probe=True)
                                   for node in list(self._suspects)), return_exceptions=True)

    def _probe(self, node: Node) -> bytes:
        """EXISTS of a key in one of the node's slots: unlike PING, it fails while the cluster
        is down (CLUSTERDOWN), which is what "answers again" has to mean for writes."""
        owned = self._slots_of(node)
        if not owned:
            return _PING
        known = self._probe_keys.get(node)
        if known is None or key_slot(known.encode()) not in owned:
            tag = 0
            while key_slot(f"probe:{{{tag}}}".encode()) not in owned:
                tag += 1
            known = self._probe_keys[node] = f"probe:{{{tag}}}"
        return encode_command(["EXISTS", known])

    def _slots_of(self, node: Node) -> frozenset[int]:
        return frozenset(s for s, owner in enumerate(self._slots or ()) if owner == node)

    def _notify(self, slots: frozenset[int], reason: str, *, writes_lost: bool) -> None:
        if writes_lost:
            log.info("Redis topology event (%s): %d slots may have lost writes", reason,
                     len(slots))
        else:
            log.info("Redis: %s", reason)
        event = TopologyEvent(slots, reason, writes_lost)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # one listener's bug must not keep the others from hearing
                log.exception("topology listener failed")

    async def _first_topology(self) -> None:
        """One CLUSTER SLOTS for a burst of first calls, not one each; bounded like a call."""
        try:
            await asyncio.wait_for(asyncio.shield(self._start_refresh()), self._timeout_s * 2)
        except TimeoutError:
            raise RedisCallError("the cluster layout is not known yet") from None

    def _refresh_soon(self) -> None:
        if time.monotonic() - self._last_refresh > _REFRESH_MIN_INTERVAL_S:
            self._start_refresh()

    def _start_refresh(self) -> asyncio.Future[None]:
        if self._refreshing is None or self._refreshing.done():
            task = asyncio.ensure_future(self.refresh_topology())
            self._refreshing = task

            def finished(done: asyncio.Future[None]) -> None:
                if self._refreshing is done:
                    self._refreshing = None
                _ignore_result(done)

            task.add_done_callback(finished)
        return self._refreshing

    async def refresh_topology(self) -> None:
        """CLUSTER SLOTS from the first node that answers (known primaries, then startup nodes)."""
        self._last_refresh = time.monotonic()
        known = list(dict.fromkeys([*self._pipes, *self._startup_nodes]))
        # Suspects last: a hung node would cost the whole deadline before the next is asked.
        candidates = ([n for n in known if n not in self._suspects]
                      + [n for n in known if n in self._suspects])
        last_error: Exception | None = None
        for node in candidates:
            try:
                layout = await self._call(node, encode_command(["CLUSTER", "SLOTS"]),
                                          internal=True)
            except Exception as err:
                last_error = err
                continue
            slots: list[Node] = [node] * _SLOTS
            for start, end, primary, *_replicas in layout:
                host = primary[0].decode() or node[0]
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = (host, int(primary[1]))
            # Routing starts afresh from the layout (MOVED may have patched it); what changed is
            # told against the layout last read, so a slot a MOVED moved first is not missed.
            self._slots = list(slots)
            if slots != self._layout:
                previous, self._layout = self._layout, slots
                if previous is not None:
                    self.topology_changes += 1
                    moved = frozenset(s for s in range(_SLOTS) if previous[s] != slots[s])
                    if moved:
                        self._notify(moved, "the slot layout changed", writes_lost=True)
            return
        raise RedisCallError(f"no Redis node answered CLUSTER SLOTS: {last_error!r}")

    def primaries(self) -> list[Node]:
        return list(dict.fromkeys(self._slots or ()))

    async def load(self, script: Script) -> None:
        """SCRIPT LOAD on every primary, so the first requests do not each meet NOSCRIPT."""
        if self._slots is None:
            await self._first_topology()
        for node in self.primaries():
            await self._call(node, encode_command(["SCRIPT", "LOAD", script.source]))

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()
        await asyncio.sleep(0)  # let the transports finish closing


def _span_attributes(operation: str, key: str) -> dict[str, Any]:
    # The key's hash slot, not the key: keys carry user and account ids.
    return {"db.system": "redis", "db.operation.name": operation,
            "db.redis.slot": key_slot(key.encode())}


def _end_span(span: Span, done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        span.set_status(StatusCode.ERROR, type(done.exception()).__name__)
    span.end()
def slot_of_key(key: str) -> int:
    """The cluster hash slot of `key` (its hash tag's, when it has one)."""
    return int(key_slot(key.encode()))


def redirection(error_text: str) -> tuple[str, int, Node] | None:
    """("MOVED"|"ASK", slot, (host, port)) from a redirection error, else None."""
    if not error_text.startswith(("MOVED ", "ASK ")):
        return None
    kind, slot, address = error_text.split(" ")
    host, _, port = address.rpartition(":")
    return kind, int(slot), (host, int(port))


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(RedisCallTimeout("timed out"))


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log "never retrieved"
