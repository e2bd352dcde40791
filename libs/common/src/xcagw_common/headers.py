"""Checks for values a caller controls before they go into an outbound HTTP header."""

from __future__ import annotations

import re

# Visible ASCII only (RFC 9110 §5.5 field-vchar without obs-text), no spaces, 1-200 characters.
# A partner's correlation id (wsa:MessageID) can carry CR/LF (`&#13;&#10;`) or non-ASCII text: h11
# refuses the former (httpx.LocalProtocolError, which retries and circuit breakers count as a
# transport failure) and httpx cannot encode the latter (UnicodeEncodeError).
_HEADER_SAFE_RE = re.compile(r"[\x21-\x7e]{1,200}")


def safe_header_value(value: str) -> str | None:
    """`value` when it can be sent as an HTTP header value as it is, else None (omit the header).

    Safe means 1-200 visible ASCII characters (0x21-0x7E): no spaces, controls, CR/LF or
    non-ASCII. An empty value is None too. The whole value must match (`re.fullmatch`): with
    `re.match` and `$`, a value ending in a newline would pass.
    """
    return value if _HEADER_SAFE_RE.fullmatch(value) else None
