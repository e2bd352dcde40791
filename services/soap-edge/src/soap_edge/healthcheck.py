"""Container HEALTHCHECK: exit 0 when GET /health/live answers 200 (stdlib only, no curl needed)."""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    # With a management listener the health endpoints live there (issue #9: not on the
    # partner listener, which may also require client certificates).
    management = os.environ.get("SOAP_EDGE_MANAGEMENT_PORT", "")
    use_management = management.isdigit() and int(management) > 0
    port = management if use_management else os.environ.get("SOAP_EDGE_PORT", "8080")
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # nosec B310 # noqa: S310 - fixed local http URL
            return 0 if resp.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
