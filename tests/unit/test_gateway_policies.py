"""Status mapping, rate-limit headers, the in-memory limiter, the circuit breaker, request
headers (client address, content types), and the OpenAPI document (no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.gateway import http_request
from services.gateway.descriptors import load_catalog
from services.gateway.errors import HttpError, http_status_for
from services.gateway.openapi import build_openapi, docs_page
from services.gateway.routes import build_route_table
from services.gateway.session_gate import CircuitBreaker
from shared.rate_limit import InMemoryRateLimiter, LimitDecision


def test_unnamed_codes_are_500() -> None:
    assert http_status_for(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status_for(grpc.StatusCode.INTERNAL) == 500
    assert http_status_for(grpc.StatusCode.UNIMPLEMENTED) == 500


def test_rate_limit_headers_follow_the_ietf_draft() -> None:
    allowed = LimitDecision(True, "user", 100, 60, 42, 12_300)
    assert allowed.headers() == [(b"ratelimit-policy", b'"user";q=100;w=60'),
                                 (b"ratelimit", b'"user";r=42;t=13')]
    refused = LimitDecision(False, "address", 100, 60, 0, 400)
    assert (b"retry-after", b"1") in refused.headers()


def test_in_memory_limiter_is_a_sliding_window() -> None:
    now = [1000.0]
    limiter = InMemoryRateLimiter(3, 60, clock=lambda: now[0])
    assert [limiter.check("u", "user").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.check("u", "user")
    assert refused.remaining == 0 and refused.retry_after_s == 60
    now[0] += 59.5
    assert not limiter.check("u", "user").allowed
    now[0] += 1
    assert limiter.check("u", "user").allowed
    assert limiter.check("other", "user").allowed


def test_circuit_breaker_opens_then_probes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 5.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 5.1
    assert breaker.allow()  # one probe
    assert not breaker.allow()
    breaker.success()
    assert breaker.allow()


def headers(**values: str) -> http_request.RequestHeaders:
    return http_request.RequestHeaders.parse(
        [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]
    )


def test_client_address_trusts_only_our_own_hops() -> None:
    scope: dict[str, Any] = {"client": ("127.0.0.1", 5555)}
    assert http_request.client_address(scope, headers(), 1) == "127.0.0.1"
    spoofed = headers(x_forwarded_for="6.6.6.6, 203.0.113.5")
    assert http_request.client_address(scope, spoofed, 1) == "203.0.113.5"
    assert http_request.client_address(scope, spoofed, 0) == "127.0.0.1"
    assert http_request.client_address(scope, headers(x_forwarded_for="junk"), 1) == "127.0.0.1"
    both = http_request.RequestHeaders.parse([(b"x-forwarded-for", b"1.1.1.1"),
                                              (b"x-forwarded-for", b"2.2.2.2")])
    assert http_request.client_address(scope, both, 1) == "2.2.2.2"


@pytest.mark.parametrize("value", ["Bearer t\u00f6ken".encode("latin-1"), b"Bearer a b",
                                   b"Token abc", b"Bearer " + b"x" * 301])
def test_tokens_that_could_not_be_ours_are_refused_before_any_lookup(value: bytes) -> None:
    with pytest.raises(HttpError) as refused:
        http_request.bearer_token(http_request.RequestHeaders.parse([(b"authorization", value)]))
    assert refused.value.http_status == 401


def test_request_ids_are_passed_through_only_when_sane() -> None:
    assert http_request.request_id(headers(x_request_id="abc-123"), lambda: "new") == "abc-123"
    assert http_request.request_id(headers(x_request_id="a b"), lambda: "new") == "new"
    assert http_request.request_id(headers(), lambda: "new") == "new"


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/json", None), ("application/json; charset=utf-8", None),
    ("application/merge-patch+json", None), ("text/plain", 415),
    ("application/json; charset=latin-1", 415), (None, 415),
])
def test_content_types(content_type: str | None, status: int | None) -> None:
    given = headers(content_type=content_type) if content_type else headers()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    if status is None:
        assert asyncio.run(http_request.read_json_body(receive, given, 100)) == b"{}"
    else:
        with pytest.raises(HttpError) as error:
            asyncio.run(http_request.read_json_body(receive, given, 100))
        assert error.value.http_status == status


def test_body_size_limit_is_checked_before_and_while_reading() -> None:
    chunks = iter([b"{" + b" " * 60, b" " * 60 + b"}"])

    async def receive() -> dict[str, Any]:
        chunk = next(chunks)
        return {"type": "http.request", "body": chunk, "more_body": chunk.startswith(b"{")}

    json_headers = headers(content_type="application/json")
    with pytest.raises(HttpError) as streamed:
        asyncio.run(http_request.read_json_body(receive, json_headers, 100))
    assert streamed.value.http_status == 413
    declared = headers(content_type="application/json", content_length="101")
    with pytest.raises(HttpError) as early:
        asyncio.run(http_request.read_json_body(receive, declared, 100))
    assert early.value.http_status == 413


def test_openapi_document_covers_routes_schemas_and_security() -> None:
    catalog = load_catalog()
    document = build_openapi(build_route_table(catalog.rpcs), catalog.comments)
    assert document["openapi"].startswith("3.")
    balance = document["paths"]["/v1/accounts/{account_id}/balance"]["get"]
    assert balance["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/bank.v1.Balance"}
    assert {p["name"] for p in balance["parameters"]} == {"account_id", "minVersion"}
    assert "security" not in balance  # the global bearer requirement applies
    transfer = document["paths"]["/v1/transfers"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header"
               for p in transfer["parameters"])
    schemas = document["components"]["schemas"]
    assert schemas["bank.v1.Money"]["properties"]["minorUnits"]["type"] == "string"
    assert schemas["bank.v1.ReadSource"]["enum"][1] == "READ_SOURCE_CACHE"
    assert set(schemas["Status"]["required"]) == {"code", "message", "details"}
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "Cache-aside" in balance["summary"]  # proto comments become descriptions
    assert "/v1/transfers" in docs_page(document)
