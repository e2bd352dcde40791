"""Prometheus metrics shared by every service: gRPC server counters and the /metrics endpoint."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

_Handler = Any  # grpc.RpcMethodHandler; grpc-stubs lag behind grpc.aio

GRPC_HANDLED = Counter(
    "xcagw_grpc_server_handled_total",
    "gRPC requests completed by the server, by method and status code.",
    ["service", "method", "code"],
)
GRPC_LATENCY = Histogram(
    "xcagw_grpc_server_handling_seconds",
    "gRPC server handling time.",
    ["service", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_LATENCY = Histogram(
    "xcagw_upstream_request_seconds",
    "Latency of calls to NHS upstream APIs, by upstream and HTTP status.",
    ["upstream", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE_REQUESTS = Counter(
    "xcagw_cache_requests_total",
    "Cache look-ups by cache name and result (hit or miss).",
    ["cache", "result"],
)

CERTIFICATE_EXPIRY = Gauge(
    "xcagw_certificate_expiry_timestamp_seconds",
    "notAfter (Unix seconds) of each certificate this process presents or trusts, by name.",
    ["name"],
)


def observe_certificate(name: str, pem: bytes) -> None:
    """Export the earliest notAfter in a PEM bundle, so expiry alerts fire in time."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return
    if certs:
        CERTIFICATE_EXPIRY.labels(name).set(min(c.not_valid_after_utc.timestamp() for c in certs))


_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REFLECTION_PREFIX = "/grpc.reflection."


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics (process CPU, memory and FDs come with the default registry)."""
    if port < 0:
        return -1
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Counts and times every unary RPC; health and reflection calls are left out."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if (
            handler is None
            or handler.unary_unary is None
            or method.startswith((_HEALTH_PREFIX, _REFLECTION_PREFIX))
        ):
            return handler
        inner = handler.unary_unary
        service = self.service_name

        async def wrapper(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                response = await inner(request, context)
                status = context.code()
                if status is not None and status != grpc.StatusCode.OK:
                    code = status.name
                return response
            except grpc.aio.AbortError:
                status = context.code()
                code = status.name if status is not None else "UNKNOWN"
                raise
            except Exception:
                code = "UNKNOWN"
                raise
            finally:
                GRPC_HANDLED.labels(service, method, code).inc()
                GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
