"""Settings base shared by every service (pydantic-settings, built in each service's main())."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def dependency_addr(env_name: str, default: str = "", description: str = "") -> Any:
    """A `host:port` of another service, read from its un-prefixed `*_ADDR` variable.

    Like the OpenTelemetry demo, localhost, compose and Kubernetes differ only in these variables.
    """
    return Field(
        default=default,
        validation_alias=AliasChoices(env_name, env_name.lower()),
        description=description or f"host:port of the dependency (env {env_name}).",
    )


class BaseServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `env_prefix` (e.g. `PDS_ADAPTER_`)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="Address the gRPC/HTTP listener binds to.")
    port: int = Field(
        default=0, description="gRPC (or HTTP for soap-edge) port; 0 picks a free one."
    )
    metrics_port: int = Field(
        default=0, description="Prometheus /metrics port; 0 picks a free one, -1 disables it."
    )
    log_level: str = Field(default="INFO", description="Root log level.")
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description=(
            "Redis URL (shared by every service; may hold a password, so secret); "
            "redis+cluster://h1:p1,h2:p2 for a Redis Cluster."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=5.0, description="Seconds in-flight RPCs get to finish after SIGTERM."
    )
    tls_cert_file: str = Field(default="", description="Server certificate (PEM) for gRPC TLS.")
    tls_key_file: str = Field(default="", description="Server private key (PEM) for gRPC TLS.")
    tls_client_ca_file: str = Field(
        default="", description="CA bundle; when set, clients must present a certificate (mTLS)."
    )
