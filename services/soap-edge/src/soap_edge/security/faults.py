"""Security refusals as SOAP 1.2 faults (ihe-xca-rules §2, WS-Security 1.1 §12)."""

from __future__ import annotations

from soap_edge.security.errors import WSSE_NS, RateLimited, SecurityError
from soap_edge.soap.faults import FaultCode, SoapFault

# Our own namespace for faults no standard defines (a rate limit).
XCAGW_FAULTS_NS = "urn:xcagw:soap-edge:faults"


def security_fault(error: SecurityError | RateLimited) -> SoapFault:
    """`env:Sender` + `wsse:<code>` (HTTP 400), or `env:Receiver` + `xcagw:RateLimited` (429)."""
    if isinstance(error, RateLimited):
        return SoapFault(
            FaultCode.RECEIVER,
            error.reason,
            http_status=error.http_status,
            subcode=(XCAGW_FAULTS_NS, "xcagw", "RateLimited"),
            # RFC 9110 §10.2.3 / RFC 6585 §4: tell the partner when to come back.
            http_headers={"retry-after": str(error.retry_after_seconds)},
        )
    return SoapFault(
        FaultCode.SENDER,
        error.partner_reason,
        http_status=error.http_status,
        subcode=(WSSE_NS, "wsse", error.subcode),
    )
