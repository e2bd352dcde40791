"""The OTLP sink receives spans from the real OTel SDK OTLP/HTTP exporter and gives them back."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from xcagw_common.testing import free_port, wait_for_port
from xcagw_devstack.otlp_sink import OtlpSink, SpanRecord, has_edge


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


def _provider(service: str, sink: OtlpSink, compression: Compression) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=sink.traces_url, compression=compression, timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_exported_spans_come_back_with_ids_parents_and_attributes(
    sink: OtlpSink, compression: Compression
) -> None:
    edge = _provider("soap-edge", sink, compression)
    adapter = _provider("pds-adapter", sink, compression)
    with edge.get_tracer("t").start_as_current_span(
        "POST /xca", kind=SpanKind.SERVER, attributes={"xcagw.transaction": "ITI-47"}
    ) as root:
        with edge.get_tracer("t").start_as_current_span(
            "xcagw.pds.v1.PdsAdapterService/GetPatient", kind=SpanKind.CLIENT
        ) as client:
            # A different process would read the parent from traceparent; the SDK context
            # carries it here, which produces the same parent/child ids on the wire.
            with adapter.get_tracer("t").start_as_current_span(
                "xcagw.pds.v1.PdsAdapterService/GetPatient",
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "xcagw.attempts": 2, "xcagw.cached": False},
            ):
                pass
    edge.shutdown()
    adapter.shutdown()

    spans = sink.wait_for(lambda s: len(s) >= 3, timeout=10)
    trace_id = format(root.get_span_context().trace_id, "032x")
    by_name = {(s.service_name, s.kind): s for s in spans}
    server = by_name[("pds-adapter", "SPAN_KIND_SERVER")]
    assert {s.trace_id for s in spans} == {trace_id}
    assert server.parent_span_id == format(client.get_span_context().span_id, "016x")
    assert server.attributes == {"rpc.system": "grpc", "xcagw.attempts": 2, "xcagw.cached": False}
    assert by_name[("soap-edge", "SPAN_KIND_SERVER")].parent_span_id == ""
    assert by_name[("soap-edge", "SPAN_KIND_SERVER")].attributes["xcagw.transaction"] == "ITI-47"
    assert server.resource["service.name"] == "pds-adapter"
    assert has_edge(spans, trace_id, "soap-edge", "pds-adapter")
    assert not has_edge(spans, trace_id, "pds-adapter", "soap-edge")
    assert set(sink.traces()) == {trace_id}

    sink.clear()
    assert sink.spans() == []


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_bad_input_gets_clear_http_errors(sink: OtlpSink) -> None:
    proto = {"Content-Type": "application/x-protobuf"}
    assert _post(sink.traces_url, b"\xff\xff\xff", proto) == 400
    assert _post(sink.traces_url, b"{}", {"Content-Type": "application/json"}) == 415
    assert _post(sink.endpoint + "/v1/metrics", b"", proto) == 404
    bomb = gzip.compress(b"\0" * (33 * 1024 * 1024))
    assert _post(sink.traces_url, bomb, {**proto, "Content-Encoding": "gzip"}) == 400
    assert _post(sink.traces_url, ExportTraceServiceRequest().SerializeToString(), proto) == 200
    assert sink.spans() == []


def test_runs_as_a_process_and_serves_spans_as_json() -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "xcagw_devstack.otlp_sink", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=20)
        provider = TracerProvider(resource=Resource.create({"service.name": "token-service"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        with provider.get_tracer("t").start_as_current_span("MintGpConnectJwt"):
            pass
        provider.shutdown()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/spans", timeout=5) as resp:  # noqa: S310
            docs = json.loads(resp.read())
        records = [SpanRecord(**d) for d in docs]
        assert [(r.service_name, r.name) for r in records] == [
            ("token-service", "MintGpConnectJwt")
        ]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/spans", method="DELETE")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            assert resp.status == 204
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/spans", timeout=5) as resp:  # noqa: S310
            assert json.loads(resp.read()) == []
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
