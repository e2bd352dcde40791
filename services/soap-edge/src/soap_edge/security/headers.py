"""HTTP hardening for the partner listener (pure ASGI middleware, outermost).

- Security headers on every response (OWASP Secure Headers: nosniff, no caching of PHI, no
  framing, a CSP that allows nothing, no referrer; HSTS over https) and no `Server` banner.
- CORS off by default: no Access-Control-* headers unless origins are configured. SOAP partners
  are servers, not browsers; a preflight from an unknown origin gets 403.
- Limits before the app sees anything: header count and total header bytes (HTTP 431,
  RFC 6585 §5), declared and streamed body size (HTTP 413). Refusals are SOAP 1.2 faults, never
  HTML or JSON (ihe-xca-rules §2).
- Internal endpoints (health, metrics) answer only when `internal_allowed(scope)` says so, so a
  partner cannot read them through the partner listener unless it is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from starlette.types import Receive, Scope, Send

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XML_NS = "http://www.w3.org/XML/1998/namespace"


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_STRIPPED = frozenset({b"server", b"x-powered-by"})


def _always_internal(scope: Scope) -> bool:
    return True


@dataclass(frozen=True)
class HardeningConfig:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    cors_origins: frozenset[str] = frozenset()
    internal_paths: tuple[str, ...] = ("/health", "/metrics", "/openapi.json")
    internal_allowed: Callable[[Scope], bool] = field(default=_always_internal)


def soap_fault_body(reason: str, code: str = "Sender") -> bytes:
    """A minimal SOAP 1.2 fault (Part 1 §5.4) for refusals made before the SOAP layer."""
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12})
    body = etree.SubElement(env, f"{{{SOAP12}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP12}}}Fault")
    fault_code = etree.SubElement(fault, f"{{{SOAP12}}}Code")
    etree.SubElement(fault_code, f"{{{SOAP12}}}Value").text = f"env:{code}"
    fault_reason = etree.SubElement(fault, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(fault_reason, f"{{{SOAP12}}}Text")
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = reason
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


class HardeningMiddleware:
    def __init__(self, app: Any, config: HardeningConfig | None = None) -> None:
        self.app = app
        self.config = config or HardeningConfig()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg = self.config
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        https = scope.get("scheme") == "https"
        if len(headers) > cfg.max_headers or sum(len(k) + len(v) for k, v in headers) > (
            cfg.max_header_bytes
        ):
            await _refuse(send, 431, "Request headers too large", https)
            return
        path: str = scope.get("path", "")
        if path.startswith(cfg.internal_paths) and not cfg.internal_allowed(scope):
            await _refuse(send, 404, "No SOAP endpoint at this address", https)
            return
        origin = _get(headers, b"origin")
        if scope.get("method") == "OPTIONS" and origin is not None:
            await self._preflight(origin, send, https)
            return
        declared = _get(headers, b"content-length")
        if declared is not None and declared.strip().isdigit():
            if int(declared) > cfg.max_body_bytes:
                await _refuse(send, 413, f"Request larger than {cfg.max_body_bytes} bytes", https)
                return

        allowed_origin = origin if origin is not None and origin in cfg.cors_origins else None
        too_large = False
        answered = False
        received = 0
        too_large_reason = f"Request larger than {cfg.max_body_bytes} bytes"

        async def limited_receive() -> Any:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > cfg.max_body_bytes:
                    # The app sees a disconnect (and stops reading); whatever it answers is
                    # replaced by the 413 fault below.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def secured_send(message: dict[str, Any]) -> None:
            nonlocal answered
            if too_large:
                if not answered:
                    answered = True
                    await _refuse(send, 413, too_large_reason, https)
                return
            if message["type"] == "http.response.start":
                answered = True
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _STRIPPED]
                out += _security_headers(https)
                if allowed_origin is not None:
                    out.append((b"access-control-allow-origin", allowed_origin.encode("latin-1")))
                    out.append((b"vary", b"Origin"))
                message = {**message, "headers": out}
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await _refuse(send, 413, too_large_reason, https)

    async def _preflight(self, origin: str, send: Send, https: bool) -> None:
        if origin not in self.config.cors_origins:
            await _refuse(send, 403, "Cross-origin requests are not allowed", https)
            return
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"POST, GET"),
            (b"access-control-allow-headers", b"content-type, soapaction"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
            *_security_headers(https),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    out = list(SECURITY_HEADERS)
    if https:
        out.append(HSTS)
    return out


async def _refuse(send: Send, status: int, reason: str, https: bool) -> None:
    body = soap_fault_body(reason)
    headers = [
        (b"content-type", b"application/soap+xml; charset=UTF-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
        *_security_headers(https),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
