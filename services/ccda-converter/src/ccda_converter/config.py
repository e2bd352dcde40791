"""Service settings (pydantic-settings, env prefix CCDA_CONVERTER_), built in main()."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from xcagw_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    """ccda-converter settings."""

    model_config = SettingsConfigDict(
        env_prefix="CCDA_CONVERTER_", extra="ignore", populate_by_name=True
    )

    terminology_url: str = Field(
        default="",
        description="FHIR R4 terminology server base for dm+d lookups ({base}/CodeSystem/$lookup); "
        "empty disables enrichment.",
    )
    terminology_timeout_seconds: float = Field(
        default=2.0, description="Budget for all dm+d lookups of one request."
    )
    dmd_cache_ttl_seconds: int = Field(
        default=7 * 24 * 3600, description="Redis TTL of a successful dm+d lookup."
    )
    document_id_root: str = Field(
        default="", description="Default OID for ClinicalDocument/id/@root ('' = UUID ids)."
    )
    executor: Literal["process", "thread"] = Field(
        default="process",
        description="Where conversions run: a process pool (parallel) or a thread pool.",
    )
    workers: int = Field(default=2, ge=1, le=32, description="Conversion workers.")
    max_bundle_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest accepted bundle_json."
    )
