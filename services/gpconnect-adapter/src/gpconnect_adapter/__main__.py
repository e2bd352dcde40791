"""gpconnect-adapter entry point: `gpconnect-adapter` (console script) or `python -m`."""

from __future__ import annotations

import asyncio
import sys

from gpconnect_adapter.app import SERVICE_NAME, ConfigurationError, check_settings, create_app
from gpconnect_adapter.config import Settings
from xcagw_common import telemetry
from xcagw_common.grpc_server import serve
from xcagw_common.logging import setup_logging


async def run(settings: Settings) -> None:
    await serve(create_app(settings))


def main() -> None:
    """Console script: settings from the environment, logging, telemetry, serve until SIGTERM."""
    settings = Settings()
    setup_logging(SERVICE_NAME, settings.log_level)
    try:
        check_settings(settings)
    except ConfigurationError as exc:
        sys.stderr.write(f"{SERVICE_NAME}: {exc}\n")
        raise SystemExit(2) from exc
    provider = telemetry.setup(SERVICE_NAME)
    try:
        asyncio.run(run(settings))
    finally:
        telemetry.shutdown(provider)


if __name__ == "__main__":
    main()
