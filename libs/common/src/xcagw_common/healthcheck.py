"""Container health probe for any xcagw gRPC service: exits 0 when the local server is SERVING.

`python -m xcagw_common.healthcheck --env-prefix PDS_ADAPTER_` asks the standard gRPC health
service on 127.0.0.1:`<PREFIX>PORT`. With server TLS on, it trusts `<PREFIX>TLS_CLIENT_CA_FILE`
and presents the server's own certificate as its client certificate, which works when one
internal CA issues both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import SettingsConfigDict

from xcagw_common.settings import BaseServiceSettings


def probe(
    port: int,
    *,
    cert_file: str = "",
    key_file: str = "",
    ca_file: str = "",
    server_name: str = "",
    timeout: float = 2.0,
) -> bool:
    """True when the server on 127.0.0.1:port answers SERVING."""
    target = f"127.0.0.1:{port}"
    if cert_file:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(ca_file).read_bytes() if ca_file else None,
            private_key=Path(key_file).read_bytes(),
            certificate_chain=Path(cert_file).read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xcagw_common.healthcheck")
    parser.add_argument("--env-prefix", required=True, help="e.g. PDS_ADAPTER_")
    args = parser.parse_args(argv)

    class ProbeSettings(BaseServiceSettings):
        """Only the port and TLS files, so the probe runs without the service's own settings."""

        model_config = SettingsConfigDict(
            env_prefix=args.env_prefix, extra="ignore", populate_by_name=True
        )

    settings = ProbeSettings()
    if settings.port <= 0:
        sys.stderr.write(f"healthcheck needs a fixed {args.env_prefix}PORT\n")
        raise SystemExit(2)
    ok = probe(
        settings.port,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        ca_file=settings.tls_client_ca_file,
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
