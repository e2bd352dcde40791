"""Sandbox settings (pydantic-settings, env prefix `SANDBOX_`), built in `cli.main()` or tests."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_KEY = "xcagw-dev-api-key"


class SandboxSettings(BaseSettings):
    """Everything the NHS sandbox can be told. All fields can be set as `SANDBOX_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore")

    port: int = Field(default=0, description="Listening port; 0 picks a free one.")
    host: str = Field(default="127.0.0.1", description="Listening address.")
    public_url: str = Field(
        default="",
        description=(
            "Base URL clients use to reach the sandbox: the OAuth `aud` check, SDS endpoint "
            "addresses and the GP Connect JWT `aud` are built from it. Empty: http://host:port "
            "(or the URL of the request when port is 0 and the CLI did not resolve it)."
        ),
    )
    api_key: str = Field(
        default=DEFAULT_API_KEY,
        description="The registered client id: client assertions need iss == sub == this.",
    )
    sds_api_key: str = Field(
        default=DEFAULT_API_KEY,
        description="Value the SDS FHIR API expects in the `apikey` header.",
    )
    jwks_file: str = Field(
        default="", description="JWKS file registered for the app (re-read when it changes)."
    )
    jwks_url: str = Field(
        default="",
        description=(
            "JWKS URL registered for the app, fetched at token time with a short cache (like the "
            "NHS API platform), so key rotation works end to end."
        ),
    )
    jwks_cache_seconds: float = Field(
        default=5.0,
        description="How long a fetched JWKS is reused; an unknown kid always forces a refetch.",
    )
    pds_rate_limit_per_second: int = Field(
        default=50, description="PDS requests per second before HTTP 429 (NHS default: 5 per app)."
    )
    consumer_asid: str = Field(
        default="200000000359",
        description="Consumer ASID(s) the fake SSP accepts in Ssp-From (comma separated).",
    )
    faults_file: str = Field(default="", description="JSON fault configuration loaded at start.")
    seed: int = Field(default=0, description="Seed for synthetic records and fault randomness.")
    log_level: str = Field(default="INFO", description="Root log level of the CLI.")

    def consumer_asids(self) -> frozenset[str]:
        """The accepted consumer ASIDs as a set."""
        return frozenset(a.strip() for a in self.consumer_asid.split(",") if a.strip())
