"""Traces across the whole path: a client's traceparent -> Envoy (exporting its span over OTLP to
a collector this test runs) -> the service's gRPC server span -> the Redis and PostgreSQL spans
below it, one connected trace per request. The services export to an in-memory exporter."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from services.account.bootstrap import build_account_app
from services.auth.bootstrap import build_auth_app
from services.gateway.envoy_clusters import Upstream
from services.transfer.bootstrap import build_transfer_app
from shared.config import Settings
from shared.tracing import configure_tracing
from tests.support.db_roles import service_settings
from tests.support.gateway import envoy_in_front
from tests.support.sessions import open_session

pytestmark = pytest.mark.integration


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP trace collector: what Envoy exports lands in `spans` as (trace id, span id,
    parent span id, name)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str]] = []

    async def Export(self, request: Any, context: Any) -> Any:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append((span.trace_id.hex(), span.span_id.hex(),
                                       span.parent_span_id.hex(), span.name))
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass
class TracedStack:
    url: str
    tls: ssl.SSLContext
    collector: Collector
    exporter: InMemorySpanExporter


@pytest.fixture(scope="module")
async def traced(base_settings: Settings, engine: AsyncEngine,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TracedStack]:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    collector_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    exporter = InMemorySpanExporter()
    settings = dataclasses.replace(base_settings,
                                   otel_exporter_otlp_endpoint=f"127.0.0.1:{collector_port}")
    tracing = configure_tracing(settings, exporter)
    assert tracing is not None
    await seed.ensure_settlement_account(engine)
    try:
        async with AsyncExitStack() as stack:
            upstreams = []
            for name, build in (("auth", build_auth_app), ("account", build_account_app),
                                ("transfer", build_transfer_app)):
                app: Any = build(service_settings(settings, name), port=0)
                await app.start()
                stack.push_async_callback(app.stop)
                upstreams.append(Upstream(name, (("127.0.0.1", app.grpc.port),)))
            front = await stack.enter_async_context(envoy_in_front(
                Path(tmp_path_factory.mktemp("traced-gateway")), settings, upstreams))
            yield TracedStack(front.url, front.tls, collector, exporter)
    finally:
        tracing.close()
        await server.stop(0)


def traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def spans_of(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id]


async def envoy_span(collector: Collector, trace_id: str) -> tuple[str, str, str, str]:
    for _ in range(150):  # Envoy exports in batches, every few seconds
        found = [s for s in collector.spans if s[0] == trace_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError("Envoy exported no span of the trace")


def assert_connected(spans: list[ReadableSpan], root_parent: str) -> ReadableSpan:
    """Every span's parent is in the trace, and the server span hangs off `root_parent`."""
    ids = {format(s.context.span_id, "016x") for s in spans}
    servers = [s for s in spans if s.kind.name == "SERVER"]
    assert len(servers) == 1, [s.name for s in spans]
    server = servers[0]
    assert server.parent is not None and format(server.parent.span_id, "016x") == root_parent
    for span in spans:
        if span is not server:
            assert span.parent is not None and format(span.parent.span_id, "016x") in ids, \
                span.name
    return server


async def test_a_balance_read_is_one_trace_from_envoy_to_redis(
    traced: TracedStack, engine: AsyncEngine, unique: Any
) -> None:
    user = await seed.create_user(engine, unique("trace") + "@example.com", "", "T",
                                  password_hash="!")
    account = await seed.create_account(engine, user)
    await seed.deposit(engine, account, 500)
    token = await open_session(engine, user)
    trace_id, parent = traceparent()
    async with httpx.AsyncClient(base_url=traced.url, verify=traced.tls) as http:
        reply = await http.get(f"/v1/accounts/{account}/balance",
                               headers={"authorization": f"Bearer {token}",
                                        "traceparent": parent})
    assert reply.status_code == 200, reply.text
    envoy = await envoy_span(traced.collector, trace_id)
    spans = spans_of(traced.exporter, trace_id)
    server = assert_connected(spans, root_parent=envoy[1])
    assert server.name == "/bank.v1.AccountService/GetBalance"
    names = {s.name for s in spans}
    assert "redis EVALSHA" in names  # the request gate
    assert "redis GET" in names  # the balance (a miss: PostgreSQL answers and fills)
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" for s in spans)


async def traced_transfer(traced: TracedStack, engine: AsyncEngine, unique: Any) -> str:
    """A transfer between a new user's two accounts through Envoy, under a traceparent of the
    test's; returns its trace id."""
    user = await seed.create_user(engine, unique("trace") + "@example.com", "", "T",
                                  password_hash="!")
    source, target = await seed.create_account(engine, user), await seed.create_account(engine,
                                                                                           user)
    await seed.deposit(engine, source, 500)
    token = await open_session(engine, user)
    trace_id, parent = traceparent()
    async with httpx.AsyncClient(base_url=traced.url, verify=traced.tls) as http:
        reply = await http.post("/v1/transfers", headers={
            "authorization": f"Bearer {token}", "traceparent": parent,
            "idempotency-key": uuid.uuid4().hex,
        }, json={"fromAccountId": source, "toAccountId": target,
                 "amount": {"minorUnits": "100", "currency": "EUR"}})
    assert reply.status_code == 200, reply.text
    return trace_id


async def test_a_transfer_is_one_trace_with_its_statement_and_floors(
    traced: TracedStack, engine: AsyncEngine, unique: Any
) -> None:
    trace_id = await traced_transfer(traced, engine, unique)
    envoy = await envoy_span(traced.collector, trace_id)
    spans = spans_of(traced.exporter, trace_id)
    server = assert_connected(spans, root_parent=envoy[1])
    assert server.name == "/bank.v1.TransferService/CreateTransfer"
    statements = [s for s in spans if s.attributes
                  and s.attributes.get("db.system") == "postgresql"]
    assert any("transfer_money" in str(s.attributes.get("db.statement", "")) for s in statements)
    assert sum(1 for s in spans if s.name == "redis EVALSHA") >= 2  # the gate, the floors


async def test_a_transfers_events_are_applied_in_its_trace(
    traced: TracedStack, engine: AsyncEngine, unique: Any
) -> None:
    """The balance-changed events carry the transfer's trace: the account service's cache update
    for each account is a CONSUMER span of that trace, below the transfer's server span."""
    trace_id = await traced_transfer(traced, engine, unique)
    for _ in range(100):  # the events are published and applied after the reply
        applies = [s for s in spans_of(traced.exporter, trace_id)
                   if s.name == "apply BalanceChanged"]
        if len(applies) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(applies) == 2, "the account service did not apply both events in the trace"
    spans = spans_of(traced.exporter, trace_id)
    ids = {format(s.context.span_id, "016x") for s in spans}
    for apply in applies:
        assert apply.kind.name == "CONSUMER"
        assert apply.parent is not None and format(apply.parent.span_id, "016x") in ids
    # The cache writes it made are its children (the compare-and-set scripts).
    apply_ids = {format(s.context.span_id, "016x") for s in applies}
    assert any(s.parent is not None and format(s.parent.span_id, "016x") in apply_ids
               for s in spans)
