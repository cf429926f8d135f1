"""What the interceptor reads from a call's metadata (no I/O)."""

from __future__ import annotations

import pytest

from shared.call_metadata import CallHeaders, address_group, peer_host
from shared.errors import Unauthenticated


def test_peer_host_drops_the_port() -> None:
    assert peer_host("ipv4:10.1.2.3:55012") == "10.1.2.3"
    assert peer_host("ipv6:[::1]:55012") == "::1"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_the_client_address_is_the_rightmost_forwarded_entry() -> None:
    """Envoy appends the TCP peer: what a client wrote before it is the client's to invent."""
    spoofed = CallHeaders.parse([("x-forwarded-for", "1.2.3.4, 203.0.113.9")])
    assert spoofed.client_address("ipv4:10.0.0.5:4242") == "203.0.113.9"
    assert CallHeaders.parse([("x-forwarded-for", "2001:db8::1")]).client_address("") == \
        "2001:db8::1"
    assert CallHeaders.parse([("x-forwarded-for", "not-an-ip")]).client_address(
        "ipv4:10.0.0.5:4242") == "10.0.0.5"
    assert CallHeaders.parse([]).client_address("ipv4:10.0.0.5:4242") == "10.0.0.5"


@pytest.mark.parametrize(("address", "group"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:0:0:0:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("::1", "::/64"),
    ("unix:/tmp/sock", "unix:/tmp/sock"),
])
def test_per_address_limits_count_ipv6_by_its_64(address: str, group: str) -> None:
    assert address_group(address) == group


def test_the_client_group_groups_the_forwarded_address_and_the_peer() -> None:
    assert CallHeaders.parse([("x-forwarded-for", "2001:db8::7")]).client_group("") == \
        "2001:db8::/64"
    assert CallHeaders.parse([]).client_group("ipv6:[2001:db8:0:5::9]:4242") == \
        "2001:db8:0:5::/64"
    assert CallHeaders.parse([]).client_group("ipv4:10.0.0.5:4242") == "10.0.0.5"


def test_headers_are_read_in_one_pass() -> None:
    headers = CallHeaders.parse([
        ("authorization", "Bearer abc"), ("x-request-id", "req-1"), ("x-bank-edge", "1"),
        ("user-agent", "grpc-python/1.0"), ("x-user-agent", "Mozilla/5.0"),
        ("idempotency-key", "k-1"),
    ])
    assert headers.bearer_token() == "abc"
    assert headers.request_id == "req-1"
    assert headers.from_edge
    assert headers.user_agent == "Mozilla/5.0"
    assert headers.idempotency_key == "k-1"
    assert not CallHeaders.parse([]).from_edge


@pytest.mark.parametrize("value", ["a" * 129, "has space", "new\nline", ""])
def test_insane_request_ids_are_dropped(value: str) -> None:
    assert CallHeaders.parse([("x-request-id", value)]).request_id is None


@pytest.mark.parametrize("value", ["Basic abc", "Bearer ", "Bearer", "token"])
def test_malformed_authorization_is_unauthenticated(value: str) -> None:
    with pytest.raises(Unauthenticated):
        CallHeaders.parse([("authorization", value)]).bearer_token()
