"""Console script `soap-edge`: settings, telemetry and logging, then uvicorn in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI

from soap_edge.app import (
    ENDPOINTS,
    SoapEndpoints,
    create_app,
    create_management_app,
    soap_chain,
)
from soap_edge.config import Settings
from soap_edge.security.runtime import server_ssl_context
from soap_edge.security.transport import bounded_protocol
from soap_edge.tracing import SoapServerSpan, excluded_url_pattern
from xcagw_common import telemetry
from xcagw_common.logging import setup_logging

log = logging.getLogger("soap_edge")


def build_server(settings: Settings) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for our app and its already-bound socket (port 0 picks a free one)."""
    app = create_app(settings)
    # The SOAP endpoints' SERVER span (with the incoming traceparent) comes from SoapServerSpan,
    # at a fraction of the generic ASGI instrumentation's cost (soap_edge/tracing.py); outermost
    # of our middleware, so HardeningMiddleware's refusals are in it too.
    app.add_middleware(SoapServerSpan, paths=frozenset(ENDPOINTS))
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Health and metrics polls would drown the traces; the SOAP endpoints have their span
        # above. Everything else keeps the instrumentor's server span, without the per-ASGI-
        # message receive/send child spans (nothing a trace needs; benchmarks/PROFILE.md).
        excluded = ["health/live", "health/ready", "metrics", excluded_url_pattern(ENDPOINTS)]
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls=",".join(excluded),
            exclude_spans=["receive", "send"],
        )
    except ImportError:  # pragma: no cover - the dependency is declared; keep serving without it
        log.warning("FastAPI instrumentation unavailable")
    # SOAP POSTs skip FastAPI's middleware stack altogether (SoapEndpoints); the span and the
    # hardening layer around them are the same classes as in the app's own stack.
    partner_app = SoapEndpoints(
        app,
        SoapServerSpan(soap_chain(app, settings), paths=frozenset(ENDPOINTS)),
        frozenset(ENDPOINTS),
    )
    tls: dict[str, Any] = {}
    ssl_context = server_ssl_context(settings)
    # httptools (C) instead of h11 (benchmarks/PROFILE.md), with h11's bound on the request head
    # kept ahead of HardeningMiddleware's (HTTP 431 there).
    head_limit = settings.max_header_bytes + 1024
    http = bounded_protocol(head_limit, tls=ssl_context is not None)
    if ssl_context is not None:
        # ihe-xca-rules §10.3: TLS 1.2+ with verified client certificates; the protocol class
        # hands the verified peer certificate to the app (ASGI TLS extension).
        tls = {
            "ssl_certfile": settings.tls_cert_file,
            "ssl_keyfile": settings.tls_key_file,
            "ssl_context_factory": lambda _config, _default: ssl_context,
        }
    config = uvicorn.Config(
        partner_app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or 1,
        server_header=False,
        http=http,
        **tls,
    )
    server = uvicorn.Server(config)
    return server, _bind(settings.host, settings.port)


def _bind(host: str, port: int) -> socket.socket:
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets it sees as TCP, and
    # without it small replies wait ~40 ms for a delayed ACK (benchmarks/PROFILE.md).
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class _ManagementServer(uvicorn.Server):
    """The management listener: the partner listener's server owns the signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_management_server(
    settings: Settings, app: FastAPI
) -> tuple[uvicorn.Server, socket.socket] | None:
    """Plain-HTTP /health and /metrics listener when SOAP_EDGE_MANAGEMENT_PORT is set."""
    if settings.management_port < 0:
        return None
    config = uvicorn.Config(
        create_management_app(app),
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        http=bounded_protocol(settings.max_header_bytes + 1024),
    )
    return _ManagementServer(config), _bind(settings.host, settings.management_port)


async def serve(settings: Settings) -> None:
    server, sock = build_server(settings)
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_cert_file else "http"
    log.info("soap-edge listening", extra={"ecs": {"url.full": f"{scheme}://{host}:{port}"}})
    front = server.config.app
    app = front.app if isinstance(front, SoapEndpoints) else None
    if not isinstance(app, FastAPI):  # pragma: no cover - build_server always passes it
        raise TypeError("soap-edge app expected")
    management = build_management_server(settings, app)
    # uvicorn installs SIGINT/SIGTERM handlers: in-flight requests finish, then the lifespan
    # closes Redis and the gRPC channels. Afterwards it re-raises the signal to the handler it
    # replaced; a no-op there turns a graceful stop into exit status 0 instead of a death by
    # signal (or a KeyboardInterrupt traceback for SIGINT).
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _after_graceful_stop)
    if management is None:
        await server.serve(sockets=[sock])
        return
    mgmt_server, mgmt_sock = management
    mhost, mport = mgmt_sock.getsockname()[:2]
    log.info("management listener", extra={"ecs": {"url.full": f"http://{mhost}:{mport}"}})
    mgmt_task = asyncio.create_task(mgmt_server.serve(sockets=[mgmt_sock]))
    try:
        await server.serve(sockets=[sock])
    finally:
        mgmt_server.should_exit = True
        await mgmt_task


def _after_graceful_stop(signum: int, frame: object) -> None:
    log.info("stopped", extra={"ecs": {"process.signal": signal.Signals(signum).name}})


def main() -> None:
    settings = Settings()
    setup_logging("soap-edge", settings.log_level)
    provider = telemetry.setup("soap-edge")
    try:
        # uvloop: libuv's event loop, several times cheaper per I/O callback than asyncio's
        # selector loop (benchmarks/PROFILE.md); grpc.aio and redis.asyncio run on it unchanged.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings))
    finally:
        telemetry.shutdown(provider)


if __name__ == "__main__":
    main()
