"""HTTP clients for SDS (API platform, server-authenticated TLS) and the SSP (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from gpconnect_adapter.config import Settings
from xcagw_common.metrics import observe_certificate

SSP_TLS12_CIPHERS = "AESGCM+EECDH:AESGCM+EDH:AES256+EECDH:AES256+EDH"
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


def ssp_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+ with the NHS-issued client certificate (GP Connect: TLS mutual authentication).

    nhs-apis.md section 4.2: the SSP requires TLS 1.2 MA with certificates on the NHS (Spine)
    chain; the CA bundle for the proxy's certificate comes from settings when given.
    """
    ctx = (
        ssl.create_default_context(cafile=settings.ssp_ca_file)
        if settings.ssp_ca_file
        else ssl.create_default_context()
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The SSP's TLS 1.2 cipher list (nhs-apis.md section 4.2); TLS 1.3 suites are unaffected.
    ctx.set_ciphers(SSP_TLS12_CIPHERS)
    if settings.ssp_client_cert_file:
        ctx.load_cert_chain(settings.ssp_client_cert_file, settings.ssp_client_key_file or None)
        observe_certificate("ssp-client", Path(settings.ssp_client_cert_file).read_bytes())
    return ctx


def create_ssp_client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for every GP Connect provider (direct or through the SSP).

    Timeouts are set per request from the remaining deadline; redirects are never followed
    because the SSP does not redirect and a redirect would leave the audited route.
    """
    return httpx.AsyncClient(
        verify=ssp_ssl_context(settings),
        limits=_LIMITS,
        follow_redirects=False,
        timeout=settings.gpconnect_timeout_seconds,
    )


def create_sds_client(settings: Settings) -> httpx.AsyncClient:
    """Client for the SDS FHIR API on the NHS API platform."""
    return httpx.AsyncClient(
        limits=_LIMITS,
        follow_redirects=False,
        timeout=settings.sds_timeout_seconds,
    )
