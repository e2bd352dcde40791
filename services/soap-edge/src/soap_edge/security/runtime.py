"""The security layer's long-lived parts, built from Settings in the app lifespan."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.types import Scope

from soap_edge.config import Settings
from soap_edge.security.audit import ArrEndpoint, AuditForwarder, AuditQueue, AuditSource
from soap_edge.security.gate import SecurityGate
from soap_edge.security.headers import HardeningConfig
from soap_edge.security.mtls import ProxyTrust, build_ssl_context
from soap_edge.security.partners import PartnerConfigError, PartnerRegistry, RateLimit
from soap_edge.security.ratelimit import PartnerRateLimiter
from soap_edge.security.xua import XuaPolicy, XuaVerifier
from xcagw_common.redis import create_redis

log = logging.getLogger(__name__)


def load_registry(settings: Settings) -> PartnerRegistry:
    """The partner registry from the file or inline JSON; refuses dev-only settings in prod."""
    if settings.partners_file:
        registry = PartnerRegistry.load(settings.partners_file)
    elif settings.partner_registry is not None:
        registry = PartnerRegistry.from_mapping(settings.partner_registry, base_dir=Path.cwd())
    else:
        log.warning(
            "no partner registry (SOAP_EDGE_PARTNERS_FILE): every SOAP request will be refused"
        )
        registry = PartnerRegistry.empty()
    insecure = registry.insecure_settings()
    if insecure and not settings.allow_insecure_dev_partners:
        raise PartnerConfigError(
            "development-only partner settings without SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS: "
            + ", ".join(insecure)
        )
    if insecure:
        log.warning(
            "INSECURE development partner settings in use",
            extra={"ecs": {"labels.insecure": "; ".join(insecure)}},
        )
    return registry


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the partner listener when a certificate is configured (mTLS with a client CA)."""
    if not settings.tls_cert_file:
        return None
    return build_ssl_context(
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file or None,
        require_client_cert=settings.tls_require_client_cert,
    )


def internal_allowed(settings: Settings) -> Callable[[Scope], bool]:
    """Who may read /health and /metrics on the partner listener."""
    if settings.management_port >= 0:
        return lambda scope: False
    networks = [ipaddress.ip_network(c, strict=False) for c in settings.internal_endpoint_cidrs]

    def allowed(scope: Scope) -> bool:
        client = scope.get("client") or (None, None)
        try:
            addr = ipaddress.ip_address(client[0] or "")
        except ValueError:
            return False
        return any(addr in net for net in networks)

    return allowed


def hardening_config(settings: Settings) -> HardeningConfig:
    return HardeningConfig(
        max_body_bytes=settings.max_request_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        cors_origins=frozenset(settings.cors_allowed_origins),
        internal_allowed=internal_allowed(settings),
    )


@dataclass
class SecurityRuntime:
    """Gate (partner, rate limit, XUA) and ATNA audit queue/forwarder of one process."""

    gate: SecurityGate
    audit: AuditQueue | None
    _forwarder_task: asyncio.Task[None] | None = None
    _forwarder_stop: asyncio.Event | None = None
    _forwarder_redis: Any = None

    @classmethod
    def start(cls, settings: Settings, redis: Any) -> SecurityRuntime:
        registry = load_registry(settings)
        default_limit = (
            RateLimit(
                per_second=settings.default_rate_limit_per_second,
                burst=settings.default_rate_limit_burst,
            )
            if settings.default_rate_limit_per_second
            else None
        )
        gate = SecurityGate(
            registry,
            ProxyTrust.of(settings.trusted_proxy_cidrs, settings.client_cert_header),
            XuaVerifier(
                XuaPolicy(
                    audiences=frozenset(settings.xua_audiences),
                    clock_skew=timedelta(seconds=settings.xua_clock_skew_seconds),
                    required=settings.xua_required,
                    cache_seconds=settings.xua_verified_cache_seconds,
                    cache_entries=settings.xua_verified_cache_entries,
                )
            ),
            PartnerRateLimiter(redis, default_limit=default_limit),
        )
        runtime = cls(gate=gate, audit=None)
        if not settings.arr_host:
            log.warning("ATNA audit disabled: SOAP_EDGE_ARR_HOST is not set")
            return runtime
        source = AuditSource(
            source_id=settings.audit_source_id or settings.hcid,
            enterprise_site_id=settings.audit_enterprise_site_id,
        )
        runtime.audit = AuditQueue(redis, source, bom=settings.audit_utf8_bom)
        endpoint = ArrEndpoint(
            host=settings.arr_host,
            port=settings.arr_port,
            tls=settings.arr_tls,
            ca_file=settings.arr_ca_file or None,
            cert_file=settings.arr_cert_file or None,
            key_file=settings.arr_key_file or None,
            server_name=settings.arr_server_name or None,
        )
        # Its own client: it blocks in XREAD longer than the request path's short timeout.
        runtime._forwarder_redis = create_redis(settings.redis_url.get_secret_value(), timeout=5.0)
        forwarder = AuditForwarder(runtime._forwarder_redis, endpoint.connector())
        runtime._forwarder_stop = asyncio.Event()
        runtime._forwarder_task = asyncio.create_task(
            forwarder.run(runtime._forwarder_stop), name="atna-forwarder"
        )
        return runtime

    async def stop(self) -> None:
        if self._forwarder_stop is not None and self._forwarder_task is not None:
            self._forwarder_stop.set()
            try:
                await asyncio.wait_for(self._forwarder_task, 10)
            except TimeoutError:
                self._forwarder_task.cancel()
        if self._forwarder_redis is not None:
            await self._forwarder_redis.aclose()
