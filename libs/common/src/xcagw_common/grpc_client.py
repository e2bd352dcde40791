"""gRPC client helpers: one channel per downstream per process, optional mTLS, health checks."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Retries of transient failures are done by the gRPC library for idempotent reads only
# (see https://github.com/grpc/proposal/blob/master/A6-client-retries.md).
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def create_channel(
    addr: str,
    *,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> grpc.aio.Channel:
    """An aio channel to `addr` (`host:port`); TLS when a CA is given, mTLS with a client cert."""
    if not ca_file:
        return grpc.aio.insecure_channel(addr, options=_CHANNEL_OPTIONS)
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    return grpc.aio.secure_channel(addr, creds, options=_CHANNEL_OPTIONS)


async def check_health(
    channel: grpc.aio.Channel, service: str = "", deadline_seconds: float = 0.5
) -> bool:
    """True when the peer's standard health service answers SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
