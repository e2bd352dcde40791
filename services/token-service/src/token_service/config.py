"""token-service settings (env prefix `TOKEN_SERVICE_`), built in main()."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from token_service import __version__
from xcagw_common.ods import validate_ods_map
from xcagw_common.settings import BaseServiceSettings

# nhs-apis.md §2.2: the NHS rejects client assertions whose exp is more than 300 s ahead.
MAX_ASSERTION_LIFETIME_SECONDS = 300

_SCOPE_RE = re.compile(r"^(patient|organization)/\*\.(read|write)( conf/[NR])?$")


def valid_requested_scope(scope: str) -> bool:
    """GP Connect `requested_scope` (integration_cross_organisation_audit_and_provenance)."""
    return bool(_SCOPE_RE.fullmatch(scope))


def app_namespace(settings: Settings) -> str:
    """Redis key prefix of one NHS application (API key) and environment (token URL).

    Replicas of one deployment share it; deployments of other apps or environments sharing a
    Redis do not. The API key itself never appears in key names.

    The digest is a Redis Cluster hash tag (`{...}`, issue #11): all keys of one application
    (rotation state and its lock; token cache, its lock and flight failures) share one slot, so
    a lock and the state it guards are always on the same master and a script may use several
    of them. Before the tag the digest was bare; there is no deployed data to migrate.
    """
    app = f"{settings.api_key.get_secret_value()}\n{settings.token_url}"
    digest = hashlib.sha256(app.encode()).hexdigest()[:16]
    return f"xcagw:token-service:{{{digest}}}"


class Settings(BaseServiceSettings):
    """Everything token-service reads from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="TOKEN_SERVICE_", extra="ignore", populate_by_name=True
    )

    # --- signing keys -------------------------------------------------------------------------
    keys_dir: str = Field(
        default="",
        description=(
            "Directory of RSA private keys, one PEM per kid named `<kid>.pem` (a directory or a "
            "Kubernetes secret mount shared by every replica). Empty: a private temporary "
            "directory, allowed only with auto_generate_key (single-replica development)."
        ),
    )
    initial_kid: str = Field(
        default="",
        description=(
            "kid that signs first when no key state exists yet (default: the oldest key in "
            "keys_dir; newer ones are staged for the next rotation)."
        ),
    )
    auto_generate_key: bool = Field(
        default=False,
        description="Development: generate a key when keys_dir holds none.",
    )
    generate_next_key: bool = Field(
        default=True,
        description=(
            "Rotation may generate the next key into keys_dir. False for a read-only secret "
            "mount: rotation then only picks up a new <kid>.pem added to the secret."
        ),
    )
    key_bits: int = Field(
        default=4096,
        description="RSA modulus size of generated keys (the NHS guide uses 4096).",
    )

    # --- NHS API platform OAuth (signed JWT client credentials) --------------------------------
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="The NHS developer-portal application's API key (client_id; iss = sub).",
    )
    token_url: str = Field(
        default="https://int.api.service.nhs.uk/oauth2/token",
        description="NHS OAuth token endpoint (aud of the client assertion).",
    )
    assertion_lifetime_seconds: int = Field(
        default=MAX_ASSERTION_LIFETIME_SECONDS,
        description="exp - iat of client assertions (at most 300).",
    )
    token_refresh_skew_seconds: float = Field(
        default=60.0,
        description="A cached access token is refreshed this long before it expires.",
    )
    oauth_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one token request to the NHS."
    )
    refresh_wait_seconds: float = Field(
        default=30.0,
        description="How long a caller waits for another replica's refresh before UNAVAILABLE.",
    )

    # --- rotation ------------------------------------------------------------------------------
    rotation_interval_seconds: float = Field(
        default=90 * 24 * 3600.0,
        description="Rotate the signing key this long after the last rotation; 0 disables.",
    )
    rotation_overlap_seconds: float = Field(
        default=120.0,
        description=(
            "A new key is published in the JWKS this long before it signs anything "
            "(at least jwks_max_age_seconds, so cached JWKS copies already hold it)."
        ),
    )
    key_retire_grace_seconds: float = Field(
        default=60.0,
        description=(
            "After the last assertion a retired key signed has expired, it stays in the JWKS "
            "this much longer (clock skew between replicas and the NHS)."
        ),
    )
    rotation_check_seconds: float = Field(
        default=30.0, description="How often every replica runs the rotation schedule."
    )

    # --- JWKS over HTTP ------------------------------------------------------------------------
    jwks_http_port: int = Field(
        default=0,
        description="HTTP port of GET /.well-known/jwks.json; 0 picks a free one, -1 disables it.",
    )
    jwks_max_age_seconds: int = Field(
        default=60, description="Cache-Control max-age of the JWKS document."
    )

    # --- GP Connect consumer JWT (integration_cross_organisation_audit_and_provenance) ---------
    gpc_issuer: str = Field(
        default="",
        description="iss: the Spine endpoint URL of our (consumer) system.",
    )
    gpc_consumer_asid: str = Field(
        default="", description="Our Spine ASID: requesting_device identifier value."
    )
    gpc_device_identifier_system: str = Field(
        default="https://fhir.nhs.uk/Id/nhsSpineASID",
        description="requesting_device identifier system.",
    )
    gpc_device_model: str = Field(default="xcagw", description="requesting_device.model.")
    gpc_device_version: str = Field(default=__version__, description="requesting_device.version.")
    gpc_default_ods_code: str = Field(
        default="",
        description=(
            "ODS code of the requesting organisation when the RequestContext organisation id "
            "is neither in gpc_organisation_ods_map nor an ODS code itself."
        ),
    )
    gpc_default_organisation_name: str = Field(
        default="", description="requesting_organization.name when the context has none."
    )
    gpc_organisation_ods_map: dict[str, str] = Field(
        default_factory=dict,
        description="RequestContext.organization_id (e.g. an OID) -> ODS code (JSON object).",
    )
    gpc_requested_scope: str = Field(
        default="patient/*.read",
        description="requested_scope when the request gives none.",
    )
    gpc_ods_system: str = Field(
        default="https://fhir.nhs.uk/Id/ods-organization-code",
        description="Identifier system of ODS organisation codes.",
    )
    gpc_sds_user_id_system: str = Field(
        default="https://fhir.nhs.uk/Id/sds-user-id",
        description="Identifier system of SDS user ids (smartcard UID).",
    )
    gpc_sds_role_profile_id_system: str = Field(
        default="https://fhir.nhs.uk/Id/sds-role-profile-id",
        description="Identifier system of SDS role profile ids.",
    )
    gpc_local_user_id_system: str = Field(
        default="",
        description="System of the local user id (default <gpc_issuer>/Id/user-id).",
    )
    gpc_local_role_system: str = Field(
        default="",
        description="System of the local role code (default <gpc_issuer>/Id/user-role).",
    )

    @field_validator("gpc_organisation_ods_map")
    @classmethod
    def _gpc_organisation_ods_map(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked at start-up, as pds-adapter's map is: each value becomes the JWT's
        # requesting_organization, so a typo must stop the service, not mislabel requests.
        return validate_ods_map(value)

    @field_validator("assertion_lifetime_seconds")
    @classmethod
    def _lifetime_at_most_300(cls, value: int) -> int:
        if not 1 <= value <= MAX_ASSERTION_LIFETIME_SECONDS:
            raise ValueError(
                f"assertion_lifetime_seconds must be 1..{MAX_ASSERTION_LIFETIME_SECONDS} "
                "(NHS rejects exp more than 5 minutes ahead)"
            )
        return value

    @field_validator("key_bits")
    @classmethod
    def _key_bits(cls, value: int) -> int:
        if value not in (2048, 3072, 4096):
            raise ValueError("key_bits must be 2048, 3072 or 4096")
        return value

    @field_validator("gpc_requested_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if not valid_requested_scope(value):
            raise ValueError("gpc_requested_scope must look like 'patient/*.read'")
        return value

    @field_validator(
        "token_refresh_skew_seconds",
        "rotation_interval_seconds",
        "rotation_overlap_seconds",
        "key_retire_grace_seconds",
    )
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("oauth_timeout_seconds", "refresh_wait_seconds", "rotation_check_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _overlap_covers_jwks_cache(self) -> Settings:
        # nhs-apis.md §2.4: publish the new kid before signing with it. A verifier holding a
        # JWKS copy up to max-age old must already see the next key when it starts signing.
        if self.rotation_overlap_seconds < self.jwks_max_age_seconds:
            raise ValueError("rotation_overlap_seconds must be >= jwks_max_age_seconds")
        if not self.keys_dir and not self.auto_generate_key:
            raise ValueError("keys_dir is required unless auto_generate_key is set")
        return self

    @property
    def local_user_id_system(self) -> str:
        return self.gpc_local_user_id_system or f"{self.gpc_issuer.rstrip('/')}/Id/user-id"

    @property
    def local_role_system(self) -> str:
        return self.gpc_local_role_system or f"{self.gpc_issuer.rstrip('/')}/Id/user-role"

    @property
    def key_retire_after_seconds(self) -> float:
        """How long a replaced key stays published after it stopped signing."""
        return self.assertion_lifetime_seconds + self.key_retire_grace_seconds
