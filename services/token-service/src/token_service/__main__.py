"""`token-service` console script.

token-service [serve]                    run the gRPC service (+ JWKS over HTTP)
token-service keygen --out DIR [--kid K] write DIR/<kid>.pem (RSA 4096); prints the kid
token-service jwks DIR                   print the public JWKS of every key in DIR
token-service healthcheck                exit 0 when the local gRPC health check is SERVING
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from token_service.keys import KeyFileError, generate_key_file, jwks_document, scan_keys_dir

SERVICE = "token-service"


def _serve() -> None:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from token_service.app import build_app
    from token_service.config import Settings
    from xcagw_common import telemetry
    from xcagw_common.grpc_server import serve
    from xcagw_common.logging import setup_logging

    provider = telemetry.setup(SERVICE)
    try:
        settings = Settings()
    except ValidationError as exc:
        # One line per bad setting, without the values (some are secrets).
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"token-service: invalid setting {field}: {error['msg']}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    except SettingsError as exc:
        # A JSON setting (e.g. GPC_ORGANISATION_ODS_MAP) that is not JSON at all; the message
        # names the field, not its value.
        print(f"token-service: invalid settings: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    setup_logging(SERVICE, settings.log_level)
    app, _runtime = build_app(settings)
    try:
        asyncio.run(serve(app))
    finally:
        telemetry.shutdown(provider)


def _keygen(out: str, kid: str | None, bits: int) -> int:
    try:
        key = generate_key_file(Path(out), bits=bits, kid=kid)
    except (KeyFileError, OSError) as exc:
        print(f"keygen failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 1
    print(key.kid)  # noqa: T201 - CLI output
    return 0


def _jwks(directory: str) -> int:
    keys = scan_keys_dir(Path(directory))
    if not keys:
        print(f"no usable <kid>.pem in {directory}", file=sys.stderr)  # noqa: T201 - CLI output
        return 1
    doc = jwks_document(key.public_jwk() for key in keys.values())
    print(json.dumps(doc, indent=2))  # noqa: T201 - CLI output
    return 0


def _healthcheck() -> int:
    from token_service.config import Settings
    from xcagw_common.grpc_client import check_health, create_channel

    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # nosec B104 # noqa: S104

    async def probe() -> bool:
        async with create_channel(f"{host}:{settings.port}") as channel:
            return await check_health(channel, deadline_seconds=2.0)

    return 0 if asyncio.run(probe()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SERVICE, description="token-service: NHS tokens, GP Connect JWTs and the JWKS."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (default)")
    keygen = sub.add_parser("keygen", help="generate an RSA private key <kid>.pem")
    keygen.add_argument("--out", required=True, help="directory to write <kid>.pem into")
    keygen.add_argument("--kid", help="key id (default: the RFC 7638 thumbprint)")
    keygen.add_argument("--bits", type=int, default=4096, choices=(2048, 3072, 4096))
    jwks = sub.add_parser("jwks", help="print the public JWKS of the keys in DIR")
    jwks.add_argument("dir")
    sub.add_parser("healthcheck", help="probe the local gRPC health service")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    if args.command in (None, "serve"):
        _serve()
        return
    if args.command == "keygen":
        sys.exit(_keygen(args.out, args.kid, args.bits))
    if args.command == "jwks":
        sys.exit(_jwks(args.dir))
    sys.exit(_healthcheck())


if __name__ == "__main__":
    main()
