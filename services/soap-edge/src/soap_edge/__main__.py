"""Console script `soap-edge`: settings, telemetry and logging, then uvicorn in this event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading

import uvicorn

from soap_edge.app import create_app
from soap_edge.config import Settings
from xcagw_common import telemetry
from xcagw_common.logging import setup_logging

log = logging.getLogger("soap_edge")


def build_server(settings: Settings) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for our app and its already-bound socket (port 0 picks a free one)."""
    app = create_app(settings)
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Health and metrics polls would drown the traces.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="health/live,health/ready,metrics")
    except ImportError:  # pragma: no cover - the dependency is declared; keep serving without it
        log.warning("FastAPI instrumentation unavailable")
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or 1,
        server_header=False,
    )
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    return server, sock


async def serve(settings: Settings) -> None:
    server, sock = build_server(settings)
    host, port = sock.getsockname()[:2]
    log.info("soap-edge listening", extra={"ecs": {"url.full": f"http://{host}:{port}"}})
    # uvicorn installs SIGINT/SIGTERM handlers: in-flight requests finish, then the lifespan
    # closes Redis and the gRPC channels. Afterwards it re-raises the signal to the handler it
    # replaced; a no-op there turns a graceful stop into exit status 0 instead of a death by
    # signal (or a KeyboardInterrupt traceback for SIGINT).
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _after_graceful_stop)
    await server.serve(sockets=[sock])


def _after_graceful_stop(signum: int, frame: object) -> None:
    log.info("stopped", extra={"ecs": {"process.signal": signal.Signals(signum).name}})


def main() -> None:
    settings = Settings()
    setup_logging("soap-edge", settings.log_level)
    provider = telemetry.setup("soap-edge")
    try:
        asyncio.run(serve(settings))
    finally:
        telemetry.shutdown(provider)


if __name__ == "__main__":
    main()
