"""Partner identity from a verified TLS client certificate (ihe-xca-rules §10.3, ATNA Secure Node).

Two deployments, one rule: the identity always comes from a certificate whose chain something we
trust has verified, never from a header anyone can send.

1. **soap-edge terminates TLS** (`build_ssl_context`: TLS 1.2 or later, client certificate
   required and verified against the partner CA bundle). `TlsPeerH11Protocol` is a uvicorn HTTP
   protocol that puts the verified peer certificate into the ASGI scope as the ASGI TLS extension
   (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM), which uvicorn itself does not fill.
2. **An ingress terminates TLS** and forwards the verified certificate in a header
   (nginx `$ssl_client_escaped_cert`, Envoy `x-forwarded-client-cert` with `Cert=`, Azure
   `X-ARR-ClientCert`). The header is read only when the TCP peer is in the configured trusted
   proxy CIDRs; from anyone else it is ignored (and counted), so it cannot be spoofed.
   Checking only that such a header *exists* (Xhuma) is the mistake this avoids.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

from soap_edge.security.errors import ClientCertificateRequired, UnknownPartner
from soap_edge.security.partners import Partner, PartnerRegistry, fingerprint
from xcagw_common.metrics import observe_certificate

log = logging.getLogger(__name__)

UNTRUSTED_CERT_HEADERS = Counter(
    "xcagw_security_untrusted_cert_headers_total",
    "Client-certificate headers ignored because they did not come from a trusted proxy.",
)

# Largest forwarded certificate header we parse (a PEM chain of a few certificates).
MAX_CERT_HEADER_BYTES = 32 * 1024


@dataclass(frozen=True)
class ClientIdentity:
    """A verified client certificate and where it came from ("tls" or "proxy")."""

    certificate: x509.Certificate
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


# ---- TLS termination in soap-edge -------------------------------------------------------------
def build_ssl_context(
    cert_file: str,
    key_file: str,
    client_ca_file: str | None,
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """Server context: TLS 1.2+ (BCP 195), client certificates verified against the CA bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    observe_certificate("soap-edge-server", Path(cert_file).read_bytes())
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("a client CA bundle is required to verify client certificates")
    # No TLS compression (CRIME) and no renegotiation surprises; modern defaults otherwise.
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    if der:
        chain.append(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode())
    return {
        # ASGI TLS extension: the verified client chain, leaf first (Python < 3.13 exposes only
        # the leaf), and no error because the handshake already enforced verification.
        "client_cert_chain": chain,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


class TlsScopeMixin:
    """Mixed in before a uvicorn protocol class: the ASGI TLS extension in every request scope."""

    app: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        tls = _tls_extension(transport)
        if tls is None:
            return
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = tls
            await inner(scope, receive, send)

        self.app = app


class TlsPeerH11Protocol(TlsScopeMixin, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol, plus the ASGI TLS extension in every request scope."""


# ---- Reading the identity from a request ------------------------------------------------------
@dataclass(frozen=True)
class ProxyTrust:
    """Which TCP peers may forward a verified client certificate, and in which header."""

    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    header: str = "x-forwarded-client-cert"

    @classmethod
    def of(cls, cidrs: Iterable[str], header: str) -> ProxyTrust:
        return cls(
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()),
            header.strip().lower(),
        )

    def trusts(self, host: str | None) -> bool:
        if not host or not self.cidrs:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.cidrs)


def identity_from_scope(scope: Any, proxy: ProxyTrust) -> ClientIdentity | None:
    """The verified client certificate of this request, if any.

    The TLS connection wins; the forwarded header is only honoured from a trusted proxy.
    """
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if chain and not tls.get("client_cert_error"):
        return ClientIdentity(x509.load_pem_x509_certificate(chain[0].encode("ascii")), "tls")
    value = _header(scope, proxy.header)
    if value is None:
        return None
    client = scope.get("client") or (None, None)
    if not proxy.trusts(client[0]):
        UNTRUSTED_CERT_HEADERS.inc()
        log.warning(
            "client certificate header ignored: not from a trusted proxy",
            extra={"ecs": {"source.ip": client[0] or ""}},
        )
        return None
    cert = parse_forwarded_certificate(value)
    return ClientIdentity(cert, "proxy") if cert is not None else None


def _header(scope: Any, name: str) -> str | None:
    target = name.encode("latin-1")
    for key, value in scope.get("headers") or []:
        if key.lower() == target:
            if len(value) > MAX_CERT_HEADER_BYTES:
                return ""
            return str(value.decode("latin-1"))
    return None


def parse_forwarded_certificate(value: str) -> x509.Certificate | None:
    """A certificate from a proxy header: URL-escaped or plain PEM, base64 DER, or Envoy XFCC."""
    text = value.strip()
    if not text:
        return None
    if "cert=" in text.lower() and "BEGIN" not in text:
        # Envoy XFCC: `By=...;Hash=...;Cert="<url-encoded PEM>";Subject="..."`; first element
        # (the client's; later elements are added by further proxies).
        first = text.split(",", 1)[0]
        for part in first.split(";"):
            key, _, val = part.partition("=")
            if key.strip().lower() == "cert":
                text = val.strip().strip('"')
                break
    if "%" in text:
        text = unquote(text)
    # PEM whose newlines a proxy replaced by spaces (or removed): keep only the base64 body.
    _, begin, rest = text.partition("-----BEGIN CERTIFICATE-----")
    if begin:
        text = rest.partition("-----END CERTIFICATE-----")[0]
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
        return x509.load_der_x509_certificate(der)
    except ValueError:
        log.warning("client certificate header is not a certificate")
        return None


def resolve_partner(
    identity: ClientIdentity | None,
    registry: PartnerRegistry,
    *,
    now: datetime | None = None,
) -> Partner:
    """The partner for this identity, or the configured anonymous (development) partner.

    Raises ClientCertificateRequired (no certificate, no anonymous partner) or UnknownPartner.
    """
    if identity is None:
        anonymous = registry.anonymous_partner
        if anonymous is None:
            raise ClientCertificateRequired("no verified client certificate")
        return anonymous
    cert = identity.certificate
    current = now or datetime.now(UTC)
    if not (cert.not_valid_before_utc <= current <= cert.not_valid_after_utc):
        # The TLS layer checks this too; a forwarded header might come from a lax ingress.
        raise UnknownPartner("client certificate outside its validity period")
    partner = registry.match_certificate(cert)
    if partner is None:
        raise UnknownPartner(f"no partner for certificate {identity.fingerprint[:16]}")
    return partner
