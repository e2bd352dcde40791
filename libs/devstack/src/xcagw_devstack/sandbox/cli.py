"""`python -m xcagw_devstack sandbox`: run the NHS sandbox with uvicorn."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import uvicorn

from xcagw_common.logging import setup_logging
from xcagw_devstack.sandbox.app import create_app
from xcagw_devstack.sandbox.config import SandboxSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xcagw_devstack sandbox",
        description="Local NHS sandbox: OAuth, PDS, SDS, GP Connect and terminology on one port. "
        "Every option can also be set as a SANDBOX_* environment variable.",
    )
    parser.add_argument("--host", help="listening address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listening port (default 0: any free port)")
    parser.add_argument("--public-url", help="base URL clients use (default http://host:port)")
    parser.add_argument("--api-key", help="registered client id for client assertions")
    parser.add_argument("--sds-api-key", help="value expected in the SDS apikey header")
    parser.add_argument("--jwks-file", help="JWKS file registered for the app")
    parser.add_argument(
        "--jwks-url", help="JWKS URL registered for the app (fetched at token time)"
    )
    parser.add_argument(
        "--jwks-cache-seconds", type=float, help="how long a fetched JWKS is reused"
    )
    parser.add_argument("--pds-rate-limit-per-second", type=int, help="PDS requests/s before 429")
    parser.add_argument(
        "--consumer-asid", help="consumer ASID(s) accepted in Ssp-From (comma separated)"
    )
    parser.add_argument("--faults-file", help="JSON fault configuration")
    parser.add_argument("--seed", type=int, help="seed for synthetic records and faults")
    parser.add_argument("--log-level", help="root log level (default INFO)")
    return parser


def settings_from_args(argv: list[str] | None) -> SandboxSettings:
    """Environment (SANDBOX_*) first, then the command-line overrides."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    return SandboxSettings(**overrides)


def main(argv: list[str] | None = None) -> None:
    """Bind, print the URL, then serve until interrupted."""
    settings = settings_from_args(argv)
    setup_logging("nhs-sandbox", settings.log_level)
    # Bind first so that port 0 resolves to a real port before the app computes its public URL.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets it sees as TCP, and
    # without it small replies wait ~40 ms for a delayed ACK (benchmarks/PROFILE.md).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    updates: dict[str, Any] = {"port": port}
    if not settings.public_url:
        updates["public_url"] = f"http://{host}:{port}"
    settings = settings.model_copy(update=updates)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        # uvicorn's access log prints raw paths, which carry NHS numbers (PDS Patient/{id}).
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    sys.stdout.write(f"xcagw NHS sandbox listening on {settings.public_url}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])
