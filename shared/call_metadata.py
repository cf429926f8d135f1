"""What a call's gRPC metadata says about its origin: the bearer token, the request id, whether
it came through the edge, the client's address, the Idempotency-Key header.

Envoy (the edge) forwards HTTP headers as metadata, sets `x-bank-edge: 1` on every request it
forwards (overwriting whatever a client sent), and appends the TCP peer to `x-forwarded-for`
(use_remote_address). Services are reachable only from the edge and from internal callers
(network policy), so the rightmost `x-forwarded-for` entry is the client address: the edge's for
external calls, the one an internal caller names for its end user otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from shared.errors import Unauthenticated

EDGE_HEADER = "x-bank-edge"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_AGENT_LENGTH = 300


@dataclass(frozen=True, slots=True)
class CallHeaders:
    authorization: str | None = None
    request_id: str | None = None
    from_edge: bool = False
    forwarded_for: str = ""
    user_agent: str = ""
    idempotency_key: str | None = None

    @classmethod
    def parse(cls, metadata: Any) -> CallHeaders:
        """One pass over the metadata; a sane client request id is kept, others dropped."""
        authorization = request_id = idempotency_key = None
        edge = False
        forwarded = agent = ""
        for key, value in metadata or ():
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if key == "authorization":
                authorization = text
            elif key == "x-request-id":
                request_id = text if _REQUEST_ID.fullmatch(text) else None
            elif key == EDGE_HEADER:
                edge = True
            elif key == "x-forwarded-for":
                forwarded = text
            elif key == "user-agent" and not agent:
                agent = text[:_MAX_AGENT_LENGTH]
            elif key == "x-user-agent":
                agent = text[:_MAX_AGENT_LENGTH]  # an internal caller naming its end user's
            elif key == "idempotency-key":
                idempotency_key = text
        return cls(authorization, request_id, edge, forwarded, agent, idempotency_key)

    def bearer_token(self) -> str | None:
        if self.authorization is None:
            return None
        scheme, _, token = self.authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return token.strip()

    def client_address(self, peer: str) -> str:
        """The rightmost x-forwarded-for entry when it is an address, else the TCP peer."""
        last = self.forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass  # not an address: never key a counter by text a client chose
        return peer_host(peer)

    def client_group(self, peer: str) -> str:
        """What per-address limits count by: `address_group` of the client address."""
        return address_group(self.client_address(peer))


def address_group(address: str) -> str:
    """The unit every per-address limit counts by: an IPv4 address itself, an IPv6 address's
    /64 ("2001:db8:1:2::/64"). One IPv6 subscriber gets a whole /64 (RFC 6177) and can rotate
    through 2^64 addresses at no cost, so a limit keyed by the full address would not limit
    anyone; a /64 is what one customer line holds. IPv4-mapped IPv6 (::ffff:a.b.c.d) is the
    IPv4 address. Anything that is not an address (a unix socket peer) is kept as given."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.1:5342' -> '10.0.0.1', 'ipv6:[::1]:5342' -> '::1'; other forms as given.
    The port changes on every connection, so it must not be part of a rate-limit key."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer[:64]


_NO_HEADERS = CallHeaders()
_current: ContextVar[CallHeaders | None] = ContextVar("call_headers", default=None)


def current_call_headers() -> CallHeaders:
    """The headers of the call being served (set by the service interceptor)."""
    return _current.get() or _NO_HEADERS


def set_call_headers(headers: CallHeaders) -> None:
    _current.set(headers)
