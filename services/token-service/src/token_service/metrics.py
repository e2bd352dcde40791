"""token-service metrics (names `xcagw_<noun>_<unit>_total`; labels never hold tokens)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TOKENS_MINTED = Counter(
    "xcagw_tokens_minted_total",
    "Tokens issued, by kind: nhs_client_assertion, nhs_access_token (fetched from the NHS), "
    "gpconnect_jwt.",
    ["kind"],
)
KEY_ROTATIONS = Counter(
    "xcagw_key_rotations_total",
    "Signing key rotations started, by trigger (scheduled, manual).",
    ["trigger"],
)
KEYS_RETIRED = Counter(
    "xcagw_keys_retired_total",
    "Signing keys removed from the JWKS after every token they signed expired.",
)
OAUTH_ERRORS = Counter(
    "xcagw_nhs_access_token_errors_total",
    "GetNhsAccessToken calls that failed, by ErrorInfo reason.",
    ["reason"],
)

SIGNING_KEY_ACTIVATED = Gauge(
    "xcagw_signing_key_activated_timestamp_seconds",
    "When the key that signs now became the signing key (Unix seconds); alerts on overdue "
    "rotation.",
)

CACHE_NAME = "nhs-access-token"
UPSTREAM_NAME = "nhs-oauth"
