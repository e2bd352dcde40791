"""pds-adapter settings (env prefix `PDS_ADAPTER_`), built in main()."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from xcagw_common.ods import is_ods_code, validate_ods_map
from xcagw_common.settings import BaseServiceSettings, dependency_addr


class Settings(BaseServiceSettings):
    """Everything pds-adapter reads from the environment (plus the shared base settings)."""

    model_config = SettingsConfigDict(
        env_prefix="PDS_ADAPTER_", extra="ignore", populate_by_name=True
    )

    # --- PDS -----------------------------------------------------------------------------------
    base_url: str = Field(
        description=(
            "PDS FHIR R4 base URL, e.g. "
            "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4 "
            "(dev: the sandbox's http://127.0.0.1:PORT/personal-demographics/FHIR/R4)."
        ),
    )
    end_user_org_ods: str = Field(
        default="",
        description=(
            "ODS code sent as NHSD-End-User-Organisation-ODS (mandatory for apps serving several "
            "end-user organisations) when the RequestContext organisation id is neither in "
            "end_user_org_ods_map nor an ODS code itself; empty: header not sent then."
        ),
    )
    end_user_org_ods_map: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "RequestContext.organization_id (e.g. an OID) -> ODS code of the requesting "
            "organisation, sent as NHSD-End-User-Organisation-ODS (JSON object)."
        ),
    )
    ca_file: str = Field(
        default="", description="CA bundle (PEM) to verify PDS's TLS certificate; empty: system."
    )
    search_max_results: int = Field(
        default=1,
        ge=1,
        le=50,
        description="_max-results of searches; application-restricted mode requires 1.",
    )

    # --- token-service -------------------------------------------------------------------------
    token_service_addr: str = dependency_addr("TOKEN_SERVICE_ADDR")
    token_service_ca_file: str = Field(
        default="", description="CA (PEM) of token-service's gRPC TLS; empty: plaintext."
    )
    token_service_cert_file: str = Field(
        default="", description="Client certificate (PEM) for mTLS to token-service."
    )
    token_service_key_file: str = Field(
        default="", description="Client private key (PEM) for mTLS to token-service."
    )
    token_timeout_seconds: float = Field(
        default=3.0, gt=0, description="Deadline of one GetNhsAccessToken call."
    )
    token_refresh_skew_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "A token held in process is dropped this long before token-service said it expires."
        ),
    )

    # --- timeouts and retries ------------------------------------------------------------------
    connect_timeout_seconds: float = Field(
        default=2.0, gt=0, description="TCP/TLS connect timeout."
    )
    read_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one HTTP attempt (each read/write)."
    )
    deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Overall budget of one RPC (all attempts); the caller's gRPC deadline wins if sooner."
        ),
    )
    retry_max_attempts: int = Field(
        default=3, ge=1, description="Attempts per PDS read including the first (429/5xx/timeouts)."
    )
    retry_base_delay_seconds: float = Field(
        default=0.2, ge=0, description="Full-jitter backoff base (first retry waits up to this)."
    )
    retry_max_delay_seconds: float = Field(
        default=2.0, ge=0, description="Upper bound of one backoff delay."
    )
    retry_after_cap_seconds: float = Field(
        default=5.0, ge=0, description="Longest Retry-After honoured (PDS's proxy sends 5)."
    )
    http_max_connections: int = Field(
        default=20, ge=1, description="Connection pool size of the PDS HTTP client."
    )

    # --- circuit breaker -----------------------------------------------------------------------
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed PDS calls that open the circuit."
    )
    breaker_reset_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long the circuit stays open before one probe."
    )

    # --- rate limit ----------------------------------------------------------------------------
    rate_limit_per_second: float = Field(
        default=5.0,
        gt=0,
        description=(
            "PDS calls per second for the whole deployment (shared in Redis); NHS default 5."
        ),
    )
    rate_limit_burst: int = Field(
        default=1, ge=1, description="Calls allowed back to back (1 = evenly spaced, spike arrest)."
    )
    rate_limit_max_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Longest a call waits for a rate-limit slot before RESOURCE_EXHAUSTED.",
    )

    # --- cache ---------------------------------------------------------------------------------
    cache_ttl_seconds: int = Field(
        default=60, ge=0, description="TTL of cached patient reads; 0 disables the cache."
    )

    @field_validator("end_user_org_ods")
    @classmethod
    def _end_user_org_ods(cls, value: str) -> str:
        value = value.strip()
        if value and not is_ods_code(value):
            raise ValueError("end_user_org_ods must be empty or an ODS code (3-10 A-Z/0-9)")
        return value

    @field_validator("end_user_org_ods_map")
    @classmethod
    def _end_user_org_ods_map(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked at start-up: every value becomes a header PDS records as the end-user
        # organisation (nhs-apis.md §1.3), so a typo must stop the service, not mislabel reads.
        return validate_ods_map(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        return value
