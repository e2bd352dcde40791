"""Container health probe: `python -m pds_adapter.healthcheck` exits 0 when the server is SERVING.

It asks the standard gRPC health service on 127.0.0.1:`PDS_ADAPTER_PORT` (SERVING only while
Redis and token-service are reachable). With server TLS on, it trusts `tls_client_ca_file` and
presents the server's own certificate, which works when one internal CA issues both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import SettingsConfigDict

from xcagw_common.settings import BaseServiceSettings


class ProbeSettings(BaseServiceSettings):
    """Only what the probe needs (port and TLS), so it runs even without the PDS settings."""

    model_config = SettingsConfigDict(
        env_prefix="PDS_ADAPTER_", extra="ignore", populate_by_name=True
    )


def probe(settings: BaseServiceSettings, timeout: float = 2.0) -> bool:
    """True when the local server answers SERVING."""
    target = f"127.0.0.1:{settings.port}"
    if settings.tls_cert_file:
        ca = settings.tls_client_ca_file
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(settings.tls_key_file).read_bytes(),
            certificate_chain=Path(settings.tls_cert_file).read_bytes(),
        )
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError:
        return False
    finally:
        channel.close()
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    settings = ProbeSettings()
    if settings.port <= 0:
        sys.stderr.write("healthcheck needs a fixed PDS_ADAPTER_PORT\n")
        raise SystemExit(2)
    raise SystemExit(0 if probe(settings) else 1)


if __name__ == "__main__":
    main()
