"""Traces (OpenTelemetry): off unless `BANK_OTEL_EXPORTER_OTLP_ENDPOINT` is set.

On, a process exports its spans over OTLP/gRPC in batches and instruments the libraries it talks
through: its gRPC server (a span per call, continuing the caller's `traceparent`, which Envoy
sends when its own tracing is on), psycopg (a span per statement), redis-py (the event
subscription and publisher), and this code's pipelined Redis client (a span per command, made
in shared/redis_pipeline.py). Log lines carry the trace and span ids (shared/logging.py).

Off, nothing is installed: no interceptor, no patched library, no span objects on the hot path.
One provider per process: the tracing of the process is decided once, at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from shared.config import Settings

log = logging.getLogger(__name__)
TRACER_NAME = "cachebank"


@dataclass(frozen=True)
class Tracing:
    """What a process built when tracing is on: the provider and the gRPC server interceptor."""

    provider: TracerProvider
    server_interceptor: Any

    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(TRACER_NAME)

    def shutdown(self) -> None:
        self.provider.shutdown()

    def close(self) -> None:
        """Undo the process' tracing (tests that turn it on in a shared process)."""
        global _installed
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        PsycopgInstrumentor().uninstrument()
        RedisInstrumentor().uninstrument()
        self.shutdown()
        _installed = None


_installed: Tracing | None = None


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """The process' tracing, built once: None when no endpoint is set and no exporter given
    (tests pass an in-memory exporter; spans are then exported as they end)."""
    global _installed
    if _installed is not None:
        return _installed
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name}),
        # A sampled caller keeps its decision (Envoy's, a client's); new traces by ratio.
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_exporter_otlp_endpoint
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))))
    trace.set_tracer_provider(provider)
    _instrument_libraries(provider)
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor = aio_server_interceptor(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _installed = Tracing(provider, interceptor)
    log.info("tracing on", extra={"fields": {
        "endpoint": settings.otel_exporter_otlp_endpoint or "in-process exporter",
        "sample_ratio": settings.otel_sample_ratio}})
    return _installed


def current_tracing() -> Tracing | None:
    return _installed


def _instrument_libraries(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)
    RedisInstrumentor().instrument(tracer_provider=provider)


def current_traceparent() -> str:
    """The current span as a W3C traceparent; '' at once when tracing is off (hot path)."""
    return inject_traceparent() if _installed is not None else ""


def consumer_span(name: str, traceparent: str) -> Any:
    """A CONSUMER span continuing `traceparent`, as a context manager; a no-op when tracing is
    off or the message carries no trace."""
    if _installed is None or not traceparent:
        return contextlib.nullcontext()
    return _installed.tracer().start_as_current_span(
        name, context=context_from_traceparent(traceparent), kind=trace.SpanKind.CONSUMER)


def inject_traceparent() -> str:
    """The current span as a W3C traceparent ('' without one), to travel in an event."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> Any:
    """The remote parent a `traceparent` names (an empty context for '')."""
    return propagate.extract({"traceparent": traceparent} if traceparent else {})
