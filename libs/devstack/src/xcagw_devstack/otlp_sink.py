"""A small OTLP/HTTP trace receiver for tests and the local stack (no Jaeger/Tempo installs here).

It accepts `POST /v1/traces` with an `ExportTraceServiceRequest` in binary protobuf (the
`http/protobuf` protocol of the OTel SDK exporters, optionally gzip-compressed) and keeps the
decoded spans in memory. Use it in-process (`OtlpSink().start()`, then `spans()`, `clear()`,
`wait_for(...)`) or as a process: `python -m xcagw_devstack.otlp_sink --port P`, then read the
spans as JSON from `GET /spans` and clear them with `DELETE /spans`.

Point services at it with `OTEL_EXPORTER_OTLP_ENDPOINT=<sink.endpoint>` (the exporter appends
`/v1/traces`) and `OTEL_BSP_SCHEDULE_DELAY=100` so spans arrive quickly.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import signal
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"
# OTLP/HTTP spec (protocol/otlp.md, "OTLP/HTTP Request"): binary protobuf uses this media type.
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_SPANS = 200_000


@dataclass(frozen=True)
class SpanRecord:
    """One received span, flattened: ids are lowercase hex, `parent_span_id` is "" for a root."""

    service_name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status_code: str = "STATUS_CODE_UNSET"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the plain Python value it holds."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return key_values(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def key_values(items: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


def decode_request(body: bytes) -> list[SpanRecord]:
    """Every span of one `ExportTraceServiceRequest` (raises DecodeError on bad protobuf)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        service_name=service,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind),
                        attributes=key_values(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        status_code=Status.StatusCode.Name(span.status.code),
                    )
                )
    return records


class _Handler(BaseHTTPRequestHandler):
    server: _SinkHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: exporters post every 100 ms in tests."""

    def _reply(self, status: HTTPStatus, body: bytes = b"", content_type: str = "") -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, b"bad Content-Length", "text/plain")
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"body too large", "text/plain")
            return None
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        try:
            if encoding == "gzip":
                body = _bounded_gunzip(body)
            elif encoding == "deflate":
                body = _bounded_inflate(body)
            elif encoding not in ("", "identity"):
                self._reply(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"unsupported encoding", "text/plain"
                )
                return None
        except (OSError, EOFError, zlib.error, ValueError):
            self._reply(HTTPStatus.BAD_REQUEST, b"undecodable body", "text/plain")
            return None
        return body

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._reply(HTTPStatus.NOT_FOUND, b"only /v1/traces is served", "text/plain")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        body = self._read_body()
        if body is None:
            return
        if content_type != PROTOBUF_CONTENT_TYPE:
            # OTLP/JSON is not supported: the services export http/protobuf.
            self._reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"use application/x-protobuf", "text/plain"
            )
            return
        try:
            records = decode_request(body)
        except DecodeError:
            self._reply(HTTPStatus.BAD_REQUEST, b"not an ExportTraceServiceRequest", "text/plain")
            return
        self.server.sink._add(records)
        self._reply(
            HTTPStatus.OK, ExportTraceServiceResponse().SerializeToString(), PROTOBUF_CONTENT_TYPE
        )

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._reply(HTTPStatus.OK, b"ok", "text/plain")
        elif path == "/spans":
            doc = json.dumps([s.to_json() for s in self.server.sink.spans()]).encode()
            self._reply(HTTPStatus.OK, doc, "application/json")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0] == "/spans":
            self.server.sink.clear()
            self._reply(HTTPStatus.NO_CONTENT)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")


def _bounded_gunzip(body: bytes) -> bytes:
    """gunzip that refuses to expand past MAX_BODY_BYTES (a gzip bomb must not exhaust memory)."""
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
        out = stream.read(MAX_BODY_BYTES + 1)
    if len(out) > MAX_BODY_BYTES:
        raise ValueError("decompressed body too large")
    return out


def _bounded_inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(body, MAX_BODY_BYTES + 1)
    if len(out) > MAX_BODY_BYTES:
        raise ValueError("decompressed body too large")
    return out


class _SinkHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sink: OtlpSink) -> None:
        super().__init__(address, _Handler)
        self.sink = sink


class OtlpSink:
    """The receiver. `start()` binds (port 0 = a free port) and serves in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.requested_port = port
        self._spans: list[SpanRecord] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: _SinkHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> OtlpSink:
        if self._server is not None:
            return self
        self._server = _SinkHTTPServer((self.host, self.requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sink not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/traces)."""
        return f"http://{self.host}:{self.port}"

    @property
    def traces_url(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is by the SDK)."""
        return self.endpoint + TRACES_PATH

    # ---- storage -------------------------------------------------------------------------
    def _add(self, records: list[SpanRecord]) -> None:
        with self._cond:
            self._spans.extend(records)
            overflow = len(self._spans) - MAX_SPANS
            if overflow > 0:
                del self._spans[:overflow]
            self._cond.notify_all()

    def spans(self) -> list[SpanRecord]:
        """A copy of every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def traces(self) -> dict[str, list[SpanRecord]]:
        """Spans grouped by trace id."""
        grouped: dict[str, list[SpanRecord]] = defaultdict(list)
        for span in self.spans():
            grouped[span.trace_id].append(span)
        return dict(grouped)

    def wait_for(
        self, predicate: Callable[[list[SpanRecord]], bool], timeout: float = 10.0
    ) -> list[SpanRecord]:
        """Block until `predicate(spans)` holds; returns the spans, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = list(self._spans)
                if predicate(current):
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition not met within {timeout}s; {len(current)} spans received"
                    )
                self._cond.wait(remaining)


def has_edge(spans: Iterable[SpanRecord], trace_id: str, parent_service: str, child: str) -> bool:
    """True when, within the trace, a span of `child` service has a parent in `parent_service`.

    The parent may be any span of the parent service (its client span for an outgoing call).
    """
    in_trace = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in in_trace}
    for span in in_trace:
        parent = by_id.get(span.parent_span_id)
        if span.service_name == child and parent is not None:
            if parent.service_name == parent_service:
                return True
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m xcagw_devstack.otlp_sink",
        description="OTLP/HTTP (protobuf) trace receiver; spans at GET /spans.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    parser.add_argument("--port", type=int, default=4318, help="listen port (0 = a free one)")
    parser.add_argument("--quiet", action="store_true", help="do not print one line per span")
    ns = parser.parse_args(argv)

    sink = OtlpSink(ns.host, ns.port)
    if not ns.quiet:
        original = sink._add

        def _print_and_add(records: list[SpanRecord]) -> None:
            for r in records:
                sys.stdout.write(f"{r.service_name} {r.trace_id} {r.span_id} {r.name}\n")
            sys.stdout.flush()
            original(records)

        sink._add = _print_and_add  # type: ignore[method-assign]
    sink.start()
    sys.stdout.write(f"otlp sink listening on {sink.endpoint}{TRACES_PATH}\n")
    sys.stdout.flush()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        pass
    sink.stop()


if __name__ == "__main__":
    main()
