"""Container health probe: `python -m gpconnect_adapter.healthcheck` exits 0 when SERVING.

It asks the standard gRPC health service on 127.0.0.1:`GPCONNECT_ADAPTER_PORT`. With TLS on, it
trusts `tls_client_ca_file` (or `healthcheck_ca_file`) and presents the server's own certificate
as its client certificate, which works when one internal CA issues both (set the
`healthcheck_*` settings otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpconnect_adapter.config import Settings


def probe(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the local server answers SERVING."""
    target = f"127.0.0.1:{settings.port}"
    if settings.tls_cert_file:
        ca = settings.healthcheck_ca_file or settings.tls_client_ca_file
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(settings.healthcheck_key_file or settings.tls_key_file).read_bytes(),
            certificate_chain=Path(
                settings.healthcheck_cert_file or settings.tls_cert_file
            ).read_bytes(),
        )
        options = (
            [("grpc.ssl_target_name_override", settings.healthcheck_server_name)]
            if settings.healthcheck_server_name
            else []
        )
        channel = grpc.secure_channel(target, creds, options=options)
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
    settings = Settings()
    if settings.port <= 0:
        sys.stderr.write("healthcheck needs a fixed GPCONNECT_ADAPTER_PORT\n")
        raise SystemExit(2)
    raise SystemExit(0 if probe(settings) else 1)


if __name__ == "__main__":
    main()
