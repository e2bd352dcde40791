"""Container health probe: `python -m gpconnect_adapter.healthcheck` exits 0 when SERVING.

It asks the standard gRPC health service on 127.0.0.1:`GPCONNECT_ADAPTER_PORT`. With TLS on, it
trusts `tls_client_ca_file` (or `healthcheck_ca_file`) and presents the server's own certificate
as its client certificate, which works when one internal CA issues both (set the
`healthcheck_*` settings otherwise).
"""

from __future__ import annotations

import sys

from gpconnect_adapter.config import Settings
from xcagw_common.healthcheck import probe as common_probe


def probe(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the local server answers SERVING (healthcheck_* settings override TLS files)."""
    return common_probe(
        settings.port,
        cert_file=settings.healthcheck_cert_file or settings.tls_cert_file,
        key_file=settings.healthcheck_key_file or settings.tls_key_file,
        ca_file=settings.healthcheck_ca_file or settings.tls_client_ca_file,
        server_name=settings.healthcheck_server_name,
        timeout=timeout,
    )


def main() -> None:
    settings = Settings()
    if settings.port <= 0:
        sys.stderr.write("healthcheck needs a fixed GPCONNECT_ADAPTER_PORT\n")
        raise SystemExit(2)
    raise SystemExit(0 if probe(settings) else 1)


if __name__ == "__main__":
    main()
