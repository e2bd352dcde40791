"""gpconnect-adapter settings (env prefix `GPCONNECT_ADAPTER_`, dependencies by `*_ADDR`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from xcagw_common.settings import BaseServiceSettings, dependency_addr


class Settings(BaseServiceSettings):
    """Everything the adapter needs to reach SDS, the Spine Secure Proxy and its dependencies."""

    model_config = SettingsConfigDict(
        env_prefix="GPCONNECT_ADAPTER_", extra="ignore", populate_by_name=True
    )

    # --- SDS FHIR API (nhs-apis.md section 3.1) -----------------------------------------
    sds_base_url: str = Field(
        default="",
        description="SDS FHIR R4 base, e.g. https://<api host>/spine-directory/FHIR/R4 (required).",
    )
    sds_api_key: SecretStr = Field(
        default=SecretStr(""), description="SDS `apikey` header (the API platform app key)."
    )
    sds_timeout_seconds: float = Field(default=5.0, gt=0, description="Per SDS HTTP attempt.")
    sds_max_attempts: int = Field(default=3, ge=1, le=10, description="SDS tries per lookup.")
    endpoint_cache_ttl_seconds: int = Field(
        default=4 * 3600,
        ge=0,
        description="How long an SDS endpoint lookup stays in Redis (0 disables the cache).",
    )

    # --- Spine Secure Proxy / GP Connect (nhs-apis.md section 4.2) ----------------------
    ssp_prefix: str = Field(
        default="",
        description=(
            "Spine Secure Proxy URL prefix, e.g. https://proxy.intspineservices.nhs.uk. The "
            "request goes to `{ssp_prefix}/{provider address}`; empty calls the provider "
            "address directly (sandbox, Orange test lab)."
        ),
    )
    consumer_asid: str = Field(
        default="", description="Our (originating) consumer ASID, sent as Ssp-From (required)."
    )
    ssp_client_cert_file: str = Field(
        default="", description="NHS-issued client certificate (PEM) for SSP mutual TLS."
    )
    ssp_client_key_file: str = Field(default="", description="Private key (PEM) for that cert.")
    ssp_ca_file: str = Field(
        default="", description="CA bundle (PEM) that signs the SSP server certificate."
    )
    gpconnect_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Per GP Connect HTTP attempt (connect + read)."
    )
    gpconnect_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per structured record request."
    )
    requested_scope: str = Field(
        default="patient/*.read", description="GP Connect JWT requested_scope claim."
    )
    max_record_bytes: int = Field(
        default=60 * 1024 * 1024,
        gt=0,
        description="Largest Bundle accepted (stays below the 64 MiB gRPC message limit).",
    )

    # --- deadlines, retries, circuit breaker -------------------------------------------
    request_deadline_seconds: float = Field(
        default=90.0,
        gt=0,
        description="Upper bound for one RPC end to end (the caller's deadline wins if shorter).",
    )
    retry_backoff_base_seconds: float = Field(default=0.2, ge=0)
    retry_backoff_max_seconds: float = Field(default=2.0, ge=0)
    retry_after_max_seconds: float = Field(
        default=5.0, ge=0, description="Longest Retry-After honoured before giving up."
    )
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failures that open a breaker."
    )
    breaker_reset_seconds: float = Field(
        default=30.0, gt=0, description="Open time before a half-open trial call."
    )

    # --- dependencies (gRPC) -----------------------------------------------------------
    pds_adapter_addr: str = dependency_addr("PDS_ADAPTER_ADDR")
    token_service_addr: str = dependency_addr("TOKEN_SERVICE_ADDR")
    dependency_deadline_seconds: float = Field(
        default=10.0, gt=0, description="Deadline of each pds-adapter / token-service call."
    )
    client_tls_ca_file: str = Field(
        default="", description="CA for pds-adapter/token-service TLS (empty = plaintext)."
    )
    client_tls_cert_file: str = Field(
        default="", description="Our client certificate for their mTLS (PEM)."
    )
    client_tls_key_file: str = Field(default="", description="Key for client_tls_cert_file.")

    # --- container health probe (gpconnect_adapter.healthcheck) -------------------------
    healthcheck_ca_file: str = Field(default="", description="CA the probe trusts (TLS on).")
    healthcheck_cert_file: str = Field(default="", description="Probe client cert (mTLS on).")
    healthcheck_key_file: str = Field(default="", description="Probe client key (mTLS on).")
    healthcheck_server_name: str = Field(
        default="", description="TLS name to expect on 127.0.0.1 (server cert SAN)."
    )

    @field_validator("sds_base_url", "ssp_prefix")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")
