"""SoapServerSpan: the SERVER span of SOAP requests (parent from traceparent, status, errors)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from soap_edge.tracing import SoapServerSpan, excluded_url_pattern

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def scope(path: str = "/iti38", method: str = "POST", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": "http",
        "http_version": "1.1",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def call(app: Any, sc: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(sc, receive, send)
    return sent


def answering(status: int, provider: TracerProvider) -> Any:
    async def app(sc: dict[str, Any], receive: Any, send: Any) -> None:
        # A client span made while handling (as redis/gRPC instrumentation would).
        with provider.get_tracer("client").start_as_current_span("client call"):
            pass
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"<env/>"})

    return app


async def test_soap_request_span_continues_the_partners_trace(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider
    app = SoapServerSpan(
        answering(200, tracer_provider), ["/iti38"], tracer_provider=tracer_provider
    )
    sent = await call(app, scope(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["POST /iti38"]
    assert server.kind is SpanKind.SERVER
    assert server.context is not None and server.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/iti38"
    assert server.status.status_code is StatusCode.UNSET
    # Client spans made while handling are its children: the trace stays stitched.
    client = spans["client call"]
    assert client.parent is not None and client.parent.span_id == server.context.span_id


async def test_without_traceparent_the_span_is_a_root(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider
    app = SoapServerSpan(
        answering(200, tracer_provider), ["/iti38"], tracer_provider=tracer_provider
    )
    await call(app, scope())
    server = next(s for s in exporter.get_finished_spans() if s.name == "POST /iti38")
    assert server.parent is None


async def test_receiver_fault_marks_the_span_as_an_error(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider
    app = SoapServerSpan(
        answering(500, tracer_provider), ["/iti38"], tracer_provider=tracer_provider
    )
    await call(app, scope())
    server = next(s for s in exporter.get_finished_spans() if s.name == "POST /iti38")
    assert server.status.status_code is StatusCode.ERROR


async def test_an_exception_is_recorded_and_raised(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider

    async def failing(sc: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = SoapServerSpan(failing, ["/iti38"], tracer_provider=tracer_provider)
    with pytest.raises(RuntimeError):
        await call(app, scope())
    (server,) = exporter.get_finished_spans()
    assert server.status.status_code is StatusCode.ERROR
    assert [e.name for e in server.events] == ["exception"]


async def test_other_paths_pass_through_untouched(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider
    app = SoapServerSpan(
        answering(200, tracer_provider), ["/iti38"], tracer_provider=tracer_provider
    )
    await call(app, scope("/health/ready", "GET"))
    assert [s.name for s in exporter.get_finished_spans()] == ["client call"]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_excluded_url_pattern_matches_exactly_the_endpoints() -> None:
    import re

    pattern = re.compile(excluded_url_pattern(["/iti38", "/xca"]))
    assert "," not in pattern.pattern
    assert pattern.search("http://gw.example:8080/iti38")
    assert pattern.search("https://gw.example/xca")
    assert not pattern.search("http://gw.example/iti38x")
    assert not pattern.search("http://gw.example/health/iti38")
    assert not pattern.search("http://gw.example/metrics")
