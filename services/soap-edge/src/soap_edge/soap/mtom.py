"""HTTP content types, MTOM/XOP multipart parsing with limits, and MTOM response packaging.

MTOM = SOAP Message Transmission Optimization Mechanism (W3C, 2005) on XOP (XML-binary Optimized
Packaging); IHE ITI TF-2x Appendix V §V.3.6 requires it for ITI-39/43.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import quote, unquote

from lxml import etree

from soap_edge.soap.faults import sender
from soap_edge.soap.ns import XOP, q

SOAP_XML = "application/soap+xml"
XOP_XML = "application/xop+xml"
MULTIPART_RELATED = "multipart/related"
# SOAP 1.1 content type; a 1.1 client gets its VersionMismatch fault from the envelope check.
TEXT_XML = "text/xml"


@dataclass(frozen=True)
class MediaType:
    """A parsed Content-Type header value."""

    type: str
    params: dict[str, str]

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


@functools.lru_cache(maxsize=256)
def parse_media_type(value: str | None) -> MediaType | None:
    """Parse `type/subtype; name="value"; ...` properly (RFC 9110 §8.3), not by substring.

    A substring test such as `"application/soap+xml" in ct` accepts MTOM only by accident, because
    the text also appears inside `start-info` (ihe-xca-rules §1.1). Memoised: partners send a
    handful of distinct values and email.message parsing is slow; callers must not change the
    returned params.
    """
    if not value or "/" not in value:
        return None
    msg = Message()
    msg["content-type"] = value
    params = msg.get_params(failobj=[])
    if not params:
        return None
    main = params[0][0].strip().lower()
    if main.count("/") != 1:
        return None
    rest: dict[str, str] = {}
    for name, val in params[1:]:
        if isinstance(val, tuple):  # RFC 2231 encoded parameter; not used by SOAP stacks
            continue
        rest[name.strip().lower()] = val.strip()
    return MediaType(main, rest)


@dataclass
class Part:
    """One MIME part of a multipart/related package."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_id(self) -> str:
        return self.headers.get("content-id", "").strip().strip("<>").strip()

    @property
    def media_type(self) -> MediaType | None:
        return parse_media_type(self.headers.get("content-type"))


@dataclass
class InboundMessage:
    """The SOAP envelope bytes plus any MTOM attachments keyed by Content-ID."""

    envelope: bytes
    attachments: dict[str, bytes] = field(default_factory=dict)
    mtom: bool = False


def decode_http_body(
    content_type: str | None, body: bytes, *, max_parts: int, max_header_bytes: int = 8192
) -> InboundMessage:
    """Split an HTTP request body into the SOAP envelope and its attachments, or raise a fault."""
    media = parse_media_type(content_type)
    if media is None:
        raise sender(
            "Missing or invalid Content-Type: send application/soap+xml (SOAP 1.2) or "
            "multipart/related (MTOM/XOP)",
            http_status=415,
        )
    if media.type in (SOAP_XML, TEXT_XML):
        return InboundMessage(envelope=body)
    if media.type != MULTIPART_RELATED:
        raise sender(
            f"Unsupported Content-Type {media.type}: send application/soap+xml or "
            "multipart/related (MTOM/XOP)",
            http_status=415,
        )
    boundary = media.param("boundary")
    if not boundary:
        raise sender("multipart/related without a boundary parameter")
    pkg_type = (media.param("type") or "").lower()
    if pkg_type and pkg_type != XOP_XML:
        raise sender(f'multipart/related type="{pkg_type}" is not MTOM (application/xop+xml)')
    parts = split_multipart(body, boundary, max_parts=max_parts, max_header_bytes=max_header_bytes)
    root = _root_part(parts, media.param("start"))
    root_type = root.media_type
    if root_type is None or root_type.type not in (XOP_XML, SOAP_XML):
        raise sender("MTOM root part is not application/xop+xml")
    attachments: dict[str, bytes] = {}
    for part in parts:
        if part is not root and part.content_id:
            attachments[part.content_id] = part.body
    return InboundMessage(envelope=root.body, attachments=attachments, mtom=True)


def split_multipart(
    body: bytes, boundary: str, *, max_parts: int, max_header_bytes: int = 8192
) -> list[Part]:
    """Split a MIME multipart body (RFC 2046 §5.1.1), accepting CRLF or bare LF line ends."""
    delim = b"--" + boundary.encode("latin-1", "replace")
    # The first delimiter may be the first line of the body or follow a preamble.
    if body.startswith(delim):
        pos = 0
    else:
        pos = body.find(b"\n" + delim)
        if pos < 0:
            raise sender("multipart body does not contain its boundary")
        pos += 1
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if body[pos : pos + 2] == b"--":
            break  # close delimiter
        # Skip transport padding and the line break after the delimiter.
        eol = body.find(b"\n", pos)
        if eol < 0:
            raise sender("truncated multipart body")
        start = eol + 1
        nxt = body.find(b"\n" + delim, start)
        if nxt < 0:
            raise sender("multipart body is missing its closing boundary")
        chunk = body[start:nxt]
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        parts.append(_parse_part(chunk, max_header_bytes))
        if len(parts) > max_parts:
            raise sender(f"multipart message has more than {max_parts} parts", http_status=413)
        pos = nxt + 1
    if not parts:
        raise sender("multipart message has no parts")
    return parts


# Header block / body separator: an empty line, CRLF or LF style.
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _parse_part(chunk: bytes, max_header_bytes: int) -> Part:
    if chunk.startswith((b"\r\n", b"\n")):
        # A part with no headers at all (RFC 2046 allows it; content is text/plain).
        return Part({}, chunk.split(b"\n", 1)[1])
    match = _HEADER_END.search(chunk, 0, max_header_bytes + 4)
    if match is None:
        raise sender("multipart part headers too long or not terminated")
    head, payload = chunk[: match.start()], chunk[match.end() :]
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", head):
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    encoding = headers.get("content-transfer-encoding", "binary").lower()
    if encoding == "base64":
        try:
            payload = base64.b64decode(payload, validate=False)
        except ValueError as exc:
            raise sender("multipart part declared base64 but is not") from exc
    elif encoding not in ("binary", "8bit", "7bit"):
        raise sender(f"unsupported Content-Transfer-Encoding {encoding}")
    return Part(headers, payload)


def _root_part(parts: list[Part], start: str | None) -> Part:
    if start:
        wanted = start.strip().strip("<>").strip()
        for part in parts:
            if part.content_id == wanted:
                return part
        raise sender("multipart start parameter names no part")
    # RFC 2387: without `start`, the root is the first part.
    return parts[0]


def resolve_xop(root: etree._Element, attachments: dict[str, bytes]) -> None:
    """Replace each `xop:Include` by the base64 of its part (XOP §3.2 reconstitution).

    Done wherever it occurs: some MTOM stacks optimise every base64Binary element, including
    those in the WS-Security header (ihe-xca-rules §1.1).
    """
    for inc in list(root.iter(q(XOP, "Include"))):
        href = unquote(inc.get("href", ""))
        if not href.startswith("cid:"):
            raise sender("xop:Include href must be a cid: URI")
        data = attachments.get(href[4:])
        if data is None:
            raise sender("xop:Include references a MIME part that is not in the message")
        parent = inc.getparent()
        if parent is None:
            raise sender("xop:Include cannot be the document root")
        if len(parent) != 1 or (parent.text or "").strip():
            raise sender("xop:Include must be the only content of its element")
        parent.remove(inc)
        parent.text = base64.b64encode(data).decode("ascii")


@dataclass
class Attachment:
    """A binary part of an outbound MTOM package."""

    content_id: str
    content_type: str
    data: bytes


def new_content_id(domain: str) -> str:
    """A Content-ID of the form `<uuid>@<domain>` (RFC 2392 `cid:` addressable)."""
    return f"{uuid.uuid4()}@{domain}"


def xop_include(content_id: str) -> etree._Element:
    """`<xop:Include href="cid:..."/>`; the cid is percent-encoded in href (RFC 2392 §2)."""
    inc = etree.Element(q(XOP, "Include"), nsmap={"xop": XOP})
    inc.set("href", "cid:" + quote(content_id, safe=""))
    return inc


def package_mtom(envelope: bytes, attachments: list[Attachment], domain: str) -> tuple[bytes, str]:
    """Build a multipart/related MTOM message; returns (body, Content-Type header value)."""
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@{domain}"
    crlf = b"\r\n"
    out = [
        b"--" + boundary.encode(),
        b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"',
        b"Content-Transfer-Encoding: binary",
        b"Content-ID: <" + root_id.encode() + b">",
        b"",
        envelope,
    ]
    for att in attachments:
        out += [
            b"--" + boundary.encode(),
            b"Content-Type: " + att.content_type.encode(),
            b"Content-Transfer-Encoding: binary",
            b"Content-ID: <" + att.content_id.encode() + b">",
            b"",
            att.data,
        ]
    out.append(b"--" + boundary.encode() + b"--")
    body = crlf.join(out) + crlf
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"'
    )
    return body, content_type
