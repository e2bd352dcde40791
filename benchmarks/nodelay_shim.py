"""Run a module as __main__ with TCP listening sockets created as IPPROTO_TCP (benchmarks only).

    python benchmarks/nodelay_shim.py soap_edge.__main__
    python benchmarks/nodelay_shim.py xcagw_devstack sandbox

Why: soap-edge, the NHS sandbox and token-service's JWKS server bind their own socket with
`socket.socket(family, SOCK_STREAM)`, i.e. proto 0. asyncio only sets TCP_NODELAY on accepted
connections whose socket reports `proto == IPPROTO_TCP` (asyncio.base_events._set_nodelay), so
their responses run into Nagle's algorithm plus the peer's delayed ACK: about 40 ms on most
responses (uvicorn writes the headers and the body separately). The one-line fix belongs in the
services (pass socket.IPPROTO_TCP); this shim lets the benchmarks measure the effect of that fix
without editing service code. It changes nothing else.
"""

from __future__ import annotations

import runpy
import socket
import sys

_Socket = socket.socket


class _TcpSocket(_Socket):
    def __init__(
        self,
        family: int = -1,
        type: int = -1,  # noqa: A002 - the stdlib's parameter name
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        if (
            fileno is None
            and family in (-1, socket.AF_INET, socket.AF_INET6)
            and type in (-1, socket.SOCK_STREAM)
            and proto in (-1, 0)
        ):
            type, proto = socket.SOCK_STREAM, socket.IPPROTO_TCP
        super().__init__(family, type, proto, fileno)


def main() -> None:
    module, *args = sys.argv[1:]
    socket.socket = _TcpSocket  # type: ignore[misc]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
