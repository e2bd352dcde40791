"""uvicorn's httptools (llhttp) protocol with a bounded request head, and its mTLS variant.

httptools parses HTTP/1.1 in C and is several times cheaper per request than h11
(benchmarks/PROFILE.md), but unlike h11 (`h11_max_incomplete_event_size`) it has no limit on
the request line and headers: it would buffer an endless header in memory before
HardeningMiddleware could answer 431. `BoundedHttpToolsProtocol` restores that limit: when a
request head is still incomplete after more than `head_limit` bytes, the connection gets the same
400 that h11 sends for an oversized event, and is closed.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from soap_edge.security.mtls import TlsScopeMixin

# Request line plus headers; Settings.max_header_bytes (16 KiB by default) is enforced with a
# 431 by HardeningMiddleware, this is only the memory bound in front of it.
DEFAULT_HEAD_LIMIT = 16 * 1024 + 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol that refuses a request head larger than `head_limit` bytes."""

    head_limit = DEFAULT_HEAD_LIMIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        # Counted before parsing; reset when the headers complete, so body bytes never count.
        # A head that ends in this chunk is not checked; the next message's head is counted from
        # the next chunk on, so the bound is exceeded by at most one read.
        self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._head_pending
            and self._head_bytes > self.head_limit
            and not self.transport.is_closing()
        ):
            msg = "Invalid HTTP request received."
            self.logger.warning("HTTP request head over %d bytes", self.head_limit)
            self.send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True
        self._head_bytes = 0


def bounded_protocol(head_limit: int, *, tls: bool = False) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with this head limit (and the TLS extension)."""
    base: type[BoundedHttpToolsProtocol] = (
        TlsPeerHttpToolsProtocol if tls else BoundedHttpToolsProtocol
    )
    return type(base.__name__, (base,), {"head_limit": head_limit})


class TlsPeerHttpToolsProtocol(TlsScopeMixin, BoundedHttpToolsProtocol):  # type: ignore[misc]
    """The bounded httptools protocol, plus the ASGI TLS extension in every request scope."""
