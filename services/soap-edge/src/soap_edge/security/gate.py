"""The security pipeline that runs before any transaction processing (see the package doc)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree
from prometheus_client import Counter

from soap_edge.security.errors import RateLimited, SecurityError, TransactionNotAllowed
from soap_edge.security.mtls import ClientIdentity, ProxyTrust, identity_from_scope, resolve_partner
from soap_edge.security.partners import Partner, PartnerRegistry
from soap_edge.security.ratelimit import PartnerRateLimiter
from soap_edge.security.xua import XuaIdentity, XuaVerifier

log = logging.getLogger(__name__)

SECURITY_REJECTIONS = Counter(
    "xcagw_security_rejections_total",
    "Requests refused by the security layer, by partner (or 'unknown') and reason.",
    ["partner", "reason"],
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the partner and the certificate it proved."""

    partner: Partner
    client: ClientIdentity | None


class SecurityGate:
    def __init__(
        self,
        registry: PartnerRegistry,
        proxy: ProxyTrust,
        verifier: XuaVerifier,
        limiter: PartnerRateLimiter,
    ) -> None:
        self.registry = registry
        self.proxy = proxy
        self.verifier = verifier
        self.limiter = limiter

    def identify(self, scope: Any) -> Caller:
        """Step 1, before the body is read. Raises ClientCertificateRequired / UnknownPartner."""
        try:
            client = identity_from_scope(scope, self.proxy)
            return Caller(resolve_partner(client, self.registry), client)
        except SecurityError as exc:
            self._rejected("unknown", exc)
            raise

    async def admit(
        self,
        caller: Caller,
        transaction: str,
        envelope: etree._Element,
        *,
        endpoint_audiences: Iterable[str] = (),
    ) -> XuaIdentity | None:
        """Steps 2-4 for a routed request; returns the verified XUA identity (or None)."""
        partner = caller.partner
        try:
            if not partner.allows(transaction):
                raise TransactionNotAllowed(f"{partner.id} may not use {transaction}")
            await self.limiter.check(partner, transaction)
            return self.verifier.verify(
                envelope,
                partner,
                endpoint_audiences=endpoint_audiences,
                client_certificate=caller.client.certificate if caller.client else None,
            )
        except SecurityError as exc:
            self._rejected(partner.id, exc)
            raise
        except RateLimited:
            SECURITY_REJECTIONS.labels(partner.id, RateLimited.metric_reason).inc()
            raise

    @staticmethod
    def _rejected(partner_id: str, exc: SecurityError) -> None:
        SECURITY_REJECTIONS.labels(partner_id, exc.metric_reason).inc()
        # The detail is ours (no PHI, no assertion content): it helps operators, not attackers.
        log.warning(
            "request refused by the security layer",
            extra={
                "ecs": {
                    "event.reason": exc.metric_reason,
                    "error.message": exc.detail or exc.reason,
                    "labels.partner_id": partner_id,
                }
            },
        )
