"""The SERVER span of a request to a SOAP endpoint, at a fraction of the generic ASGI cost.

OpenTelemetry's ASGI middleware (via FastAPIInstrumentor) costs about 0.15-0.2 ms of CPU per
request here - span details found by matching the path against every route, request attributes
read through its generic header getter, a wrapper around every ASGI message, duration
attributes for a meter provider soap-edge does not configure - which was 12-15 % of a cached
ITI-38 (benchmarks/PROFILE.md section 6). The SOAP endpoints are a fixed set of paths, so this
middleware makes their span directly (POSTs and the WSDL GETs alike) and the instrumentor
excludes them; every other path keeps the instrumentor's span (health and metrics polls stay
untraced).

What a trace needs is unchanged: the W3C `traceparent`/`tracestate` of the partner's request is
the parent (W3C Trace Context §3), the span is current while the request is handled, so the
Redis, gRPC and httpx client spans are its children and the adapters' spans join the same trace.
Attributes follow the stable OpenTelemetry HTTP server semantic conventions (method, scheme,
path, route, protocol version, status code; 5xx marks the span as an error). The path is one of
the fixed endpoint paths, so no patient identifier can reach a span from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_PROPAGATED = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


class SoapServerSpan:
    """Pure ASGI middleware: one SERVER span per HTTP request to `paths`."""

    def __init__(
        self,
        app: ASGIApp,
        paths: Iterable[str],
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        # The global provider's tracer is a proxy until telemetry.setup() installs the provider.
        self._tracer = trace.get_tracer("soap_edge", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            header = _PROPAGATED.get(name.lower())
            if header is not None:
                # The first occurrence, as the W3C propagator reads a header list.
                carrier.setdefault(header, value.decode("latin-1"))
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "_OTHER"
        path = scope["path"]
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": scope.get("scheme", "http"),
            "url.path": path,
            "http.route": path,
        }
        if scope.get("http_version"):
            attributes["network.protocol.version"] = scope["http_version"]
        name = f"{method if method != '_OTHER' else 'HTTP'} {path}"
        with self._tracer.start_as_current_span(
            name,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, traced_send)


def excluded_url_pattern(paths: Iterable[str]) -> str:
    """An OpenTelemetry `excluded_urls` entry matching exactly these paths (no commas)."""
    alternatives = "|".join(sorted(p.strip("/") for p in paths))
    return f"^[a-z]+://[^/]+/(?:{alternatives})$"
