"""soap-edge settings: env prefix SOAP_EDGE_; dependency addresses from un-prefixed *_ADDR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from xcagw_common.settings import BaseServiceSettings, dependency_addr

NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"
# Epic Care Everywhere id (CEID) domain seen in eHealth Exchange traffic (prior-art lessons §5).
EPIC_CEID_OID = "1.2.840.114350.1.13.525.3.7.3.688884.100"


def _bare_oid(value: str) -> str:
    value = value.strip()
    return value[len("urn:oid:") :] if value.lower().startswith("urn:oid:") else value


class Settings(BaseServiceSettings):
    """Everything soap-edge reads from the environment. Lists are JSON (`'["a","b"]'`)."""

    model_config = SettingsConfigDict(
        env_prefix="SOAP_EDGE_", extra="ignore", populate_by_name=True
    )

    pds_adapter_addr: str = dependency_addr("PDS_ADAPTER_ADDR", "127.0.0.1:50052")
    gpconnect_adapter_addr: str = dependency_addr("GPCONNECT_ADAPTER_ADDR", "127.0.0.1:50053")
    ccda_converter_addr: str = dependency_addr("CCDA_CONVERTER_ADDR", "127.0.0.1:50054")
    token_service_addr: str = dependency_addr("TOKEN_SERVICE_ADDR", "127.0.0.1:50051")

    # Our side of the backends' gRPC TLS (xcagw_common.grpc_server serves TLS with their
    # tls_cert_file, mTLS with their tls_client_ca_file); the same for all four backends.
    backend_tls_ca_file: str = Field(
        default="",
        description="CA bundle (PEM) that verifies the backend services' certificates; when set, "
        "soap-edge calls pds-adapter, gpconnect-adapter, ccda-converter and token-service over "
        "TLS (empty = plaintext).",
    )
    backend_tls_cert_file: str = Field(
        default="",
        description="Our client certificate (PEM) for backends that require mTLS; needs "
        "backend_tls_key_file and backend_tls_ca_file.",
    )
    backend_tls_key_file: str = Field(
        default="", description="Private key (PEM) of backend_tls_cert_file."
    )

    # Identity of this responding gateway (ihe-xca-rules §4.4, §6).
    home_community_id: str = Field(
        default="2.16.840.1.113883.2.1.3.34.9001",
        description="Our homeCommunityId (OID, with or without urn:oid:). Also the HL7 device id.",
    )
    additional_home_community_ids: list[str] = Field(
        default_factory=list, description="Further HCIDs this gateway answers for."
    )
    repository_unique_id: str = Field(
        default="2.16.840.1.113883.2.1.3.34.9001.2", description="Our XDS repositoryUniqueId."
    )
    organization_name: str = Field(default="NHS XCA Gateway", description="Shown in HL7 replies.")
    public_base_url: str = Field(
        default="", description="External base URL used in WSDL addresses; empty = request URL."
    )
    processing_code: str = Field(
        default="P", description="HL7 processingCode: P production, T training, D debugging."
    )
    ceid_domains: list[str] = Field(
        default_factory=lambda: [EPIC_CEID_OID],
        description="Patient id domains (OIDs) accepted via a stored CEID -> NHS number mapping.",
    )
    accept_xds_actions: bool = Field(
        default=True,
        description="Also answer ITI-18/ITI-43 actions (same bodies as ITI-38/ITI-39).",
    )

    # Partners and security (issue #9; soap_edge.security). Secure by default: without a partner
    # registry every SOAP request is refused.
    partners_file: str = Field(
        default="",
        description="Partner registry file (YAML or JSON, format in soap_edge.security.partners).",
    )
    partner_registry: dict[str, Any] | None = Field(
        default=None, description="The partner registry inline as JSON (instead of the file)."
    )
    allow_insecure_dev_partners: bool = Field(
        default=False,
        description="Development only: allow an anonymous partner (no client certificate) and "
        "partners whose SAML is read without verification.",
    )
    tls_require_client_cert: bool = Field(
        default=True,
        description="With TLS on (tls_cert_file), refuse connections without a client "
        "certificate verified against tls_client_ca_file.",
    )
    trusted_proxy_cidrs: list[str] = Field(
        default_factory=list,
        description="Ingress addresses allowed to forward a verified client certificate.",
    )
    client_cert_header: str = Field(
        default="x-forwarded-client-cert",
        description="Header with the verified client certificate (PEM URL-escaped, base64 DER "
        "or Envoy XFCC), read only from trusted_proxy_cidrs.",
    )
    xua_required: bool = Field(
        default=True, description="Every request needs a signed XUA assertion (ITI-40)."
    )
    xua_audiences: list[str] = Field(
        default_factory=list,
        description="Accepted SAML audiences besides our endpoint URLs and each partner's own.",
    )
    xua_clock_skew_seconds: float = Field(default=60.0, ge=0, le=600)
    xua_verified_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="Keep a successfully verified XUA assertion (same bytes, same partner) this "
        "long, never past its NotOnOrAfter; 0 verifies every request afresh "
        "(soap_edge.security.xua).",
    )
    xua_verified_cache_entries: int = Field(
        default=4096, ge=0, description="At most this many verified assertions are kept (LRU)."
    )
    default_rate_limit_per_second: float | None = Field(
        default=None, gt=0, description="Rate limit for partners without their own."
    )
    default_rate_limit_burst: int = Field(default=10, ge=1)

    # ATNA audit (ITI-20) to an Audit Record Repository over syslog TLS (RFC 5425).
    arr_host: str = Field(
        default="", description="Audit Record Repository host; empty disables ATNA audit."
    )
    arr_port: int = Field(default=6514, ge=1, le=65535, description="RFC 5425 port.")
    arr_tls: bool = Field(default=True, description="TLS to the ARR (false: plain TCP, dev).")
    arr_ca_file: str = Field(default="", description="CA bundle for the ARR certificate.")
    arr_cert_file: str = Field(default="", description="Our client certificate for the ARR.")
    arr_key_file: str = Field(default="", description="Our client key for the ARR.")
    arr_server_name: str = Field(default="", description="ARR TLS name; empty = arr_host.")
    audit_source_id: str = Field(
        default="", description="AuditSourceID; empty = our homeCommunityId."
    )
    audit_enterprise_site_id: str = Field(default="", description="AuditEnterpriseSiteID.")
    audit_utf8_bom: bool = Field(
        default=True, description="Start the syslog MSG with a BOM (RFC 5424 §6.4)."
    )

    # HTTP hardening of the partner listener.
    cors_allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed by CORS (none by default)."
    )
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=64, ge=8)
    internal_endpoint_cidrs: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Clients that may read /health and /metrics on the partner listener.",
    )
    management_port: int = Field(
        default=-1,
        ge=-1,
        description="Separate plain-HTTP listener for /health and /metrics (0 = free port); "
        "when set they leave the partner listener entirely. -1: none.",
    )

    # Redis retention (documented with the key names in store.py).
    document_retention_seconds: int = Field(default=24 * 3600, ge=60)
    ondemand_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    ceid_mapping_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    session_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    continuation_ttl_seconds: int = Field(default=600, ge=10)
    generation_failure_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "How long a failed record build is remembered, so concurrent identical requests "
            "share its failure instead of each calling GP Connect again."
        ),
    )
    generation_lock_seconds: float = Field(
        default=45.0, gt=0, description="How long one request may hold a patient's generation lock."
    )
    require_query_before_retrieve: bool = Field(
        default=False, description="ITI-39 only for documents the same partner found via ITI-38."
    )

    # In-process caches of the cached-query path (issue #11; why each is safe: documents.py and
    # store.py). 0 disables a cache.
    pds_check_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "How long a passed PDS restriction check is reused for serving stored data. "
            "pds-adapter already reuses a PDS read for 60 s; this adds at most this much."
        ),
    )
    document_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long stored document metadata and content (immutable per uniqueId) "
        "are kept in process.",
    )
    document_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="Bound of the in-process document cache."
    )

    # Hardening.
    max_leaf_class_results: int = Field(
        default=100,
        ge=1,
        description=(
            "Most objects one LeafClass query answer may carry; beyond it the answer is "
            "XDSTooManyResults and the partner re-queries with ObjectRef (ITI TF-2a 3.18.4.1.3)."
        ),
    )
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_xml_depth: int = Field(default=64, ge=8)
    max_mime_parts: int = Field(default=16, ge=1)

    # Timeouts: keep the whole exchange under the initiators' 15 s receive timeout (oehf/ipf#188).
    pds_timeout_seconds: float = Field(default=5.0, gt=0)
    gpconnect_timeout_seconds: float = Field(default=9.0, gt=0)
    ccda_timeout_seconds: float = Field(default=5.0, gt=0)
    ccda_enrich_dmd: bool = Field(
        default=True,
        description=(
            "Ask ccda-converter to enrich dm+d medication codes via the NHS terminology server "
            "(it never fails a conversion when the server is down)."
        ),
    )
    readiness_timeout_seconds: float = Field(default=0.5, gt=0)

    # XCA "Asynchronous Web Services Exchange" option (ihe-xca-rules §1.4). Off: non-anonymous
    # ReplyTo gets wsa:OnlyAnonymousAddressSupported.
    async_replies_enabled: bool = False
    async_reply_allowlist: list[str] = Field(
        default_factory=list,
        description="https URL prefixes a ReplyTo may point at when async replies are enabled.",
    )
    async_reply_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("home_community_id", "repository_unique_id")
    @classmethod
    def _oid(cls, value: str) -> str:
        return _bare_oid(value)

    @field_validator("additional_home_community_ids", "ceid_domains")
    @classmethod
    def _oids(cls, value: list[str]) -> list[str]:
        return [_bare_oid(v) for v in value if v.strip()]

    @field_validator("processing_code")
    @classmethod
    def _processing(cls, value: str) -> str:
        if value not in ("P", "T", "D"):
            raise ValueError("processing_code must be P, T or D")
        return value

    @model_validator(mode="after")
    def _backend_tls(self) -> Settings:
        """Refuse to start with backend TLS settings that cannot work, naming the variables: a
        client certificate is only sent inside TLS, and needs its key."""
        cert, key, ca = (
            self.backend_tls_cert_file,
            self.backend_tls_key_file,
            self.backend_tls_ca_file,
        )
        if bool(cert) != bool(key):
            raise ValueError(
                "backend_tls_cert_file and backend_tls_key_file (SOAP_EDGE_BACKEND_TLS_CERT_FILE, "
                "SOAP_EDGE_BACKEND_TLS_KEY_FILE) must be set together"
            )
        if cert and not ca:
            raise ValueError(
                "backend_tls_cert_file (mTLS) needs backend_tls_ca_file "
                "(SOAP_EDGE_BACKEND_TLS_CA_FILE): a client certificate is only sent over TLS"
            )
        for name, path in (
            ("backend_tls_ca_file", ca),
            ("backend_tls_cert_file", cert),
            ("backend_tls_key_file", key),
        ):
            if path and not Path(path).is_file():
                raise ValueError(f"{name} (SOAP_EDGE_{name.upper()}): no such file {path!r}")
        return self

    @property
    def hcid(self) -> str:
        """Our primary homeCommunityId in `urn:oid:` form."""
        return f"urn:oid:{self.home_community_id}"

    @property
    def hcid_oids(self) -> frozenset[str]:
        """Every HCID we answer for, as bare OIDs."""
        return frozenset([self.home_community_id, *self.additional_home_community_ids])

    def is_our_hcid(self, value: str) -> bool:
        """Accepts `urn:oid:X` and, for partners that omit the prefix, a bare `X`."""
        return _bare_oid(value) in self.hcid_oids
