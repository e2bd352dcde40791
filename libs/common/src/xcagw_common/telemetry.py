"""OpenTelemetry setup: one TracerProvider per process, OTLP export only when configured."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_instrumented = False


def setup(service_name: str) -> TracerProvider:
    """Install tracing; call first in main(), before any gRPC server or channel is created.

    The gRPC instrumentors patch the grpc.aio constructors, so ordering matters.
    """
    global _instrumented
    resource = Resource.create({"service.name": service_name, "service.namespace": "xcagw"})
    provider = TracerProvider(resource=resource)
    if (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        and os.environ.get("OTEL_SDK_DISABLED", "false").lower() != "true"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    if not _instrumented:
        _instrument()
        _instrumented = True
    return provider


def _instrument() -> None:
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        filters,
    )
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Health checks are polled every few seconds: keep them out of traces.
    GrpcAioInstrumentorServer(filter_=filters.negate(filters.health_check())).instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient(filter_=filters.negate(filters.health_check())).instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()
    # Redis spans must not carry keys or arguments: keys hold NHS numbers.
    RedisInstrumentor().instrument(sanitize_query=True)


def shutdown(provider: Any) -> None:
    """Flush spans before exit."""
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (attributes: `xcagw.*`, never patient identifiers)."""
    return trace.get_tracer(name)
