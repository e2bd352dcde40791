"""NHS API platform OAuth 2.0: client credentials with a signed JWT client assertion.

Checks and error strings follow NHSDigital/identity-service-api (nhs-apis.md §2.3): each failure
gets the identity service's `{"error", "error_description", "message_id"}` body and status.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from jwcrypto import jws
from starlette.responses import Response

from xcagw_devstack.sandbox.outcomes import json_response, oauth_error
from xcagw_devstack.sandbox.state import KeyRegistrationError, find_key, get_state

router = APIRouter()

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 300
EXP_GRACE = 25
"""NHS accepts exp up to about now + 300 s plus a little clock skew; +330 s is rejected."""


class OAuthError(Exception):
    def __init__(self, status: int, description: str, error: str = "invalid_request") -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.error = error


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _decode(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise OAuthError(400, "Malformed JWT in client_assertion")
    try:
        header = _b64json(parts[0])
        claims = _b64json(parts[1])
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise OAuthError(400, "Malformed JWT in client_assertion") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError(400, "Malformed JWT in client_assertion")
    return header, claims


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


async def _validate(request: Request, form: dict[str, str]) -> None:
    state = get_state(request)
    settings = state.settings
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "grant_type is missing")
    if grant_type != "client_credentials":
        raise OAuthError(400, "grant_type is invalid", error="unsupported_grant_type")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise OAuthError(
            400,
            "Missing or invalid client_assertion_type - must be "
            "'urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
    assertion = form.get("client_assertion")
    if not assertion:
        raise OAuthError(400, "Missing client_assertion")
    header, claims = _decode(assertion)
    if header.get("alg") != "RS512":
        raise OAuthError(
            400, "Invalid 'alg' header in JWT - unsupported JWT algorithm - must be 'RS512'"
        )
    kid = header.get("kid")
    if not kid or not isinstance(kid, str):
        raise OAuthError(400, "Missing 'kid' header in JWT")
    for name in ("iss", "sub", "jti", "aud"):
        if name in claims and not isinstance(claims[name], str):
            raise OAuthError(400, "Failed to decode JWT")
    if "exp" in claims and not _is_int(claims["exp"]):
        raise OAuthError(400, "Failed to decode JWT")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not iss or not sub or iss != sub:
        raise OAuthError(400, "Missing or non-matching iss/sub claims in JWT")
    if iss != settings.api_key:
        raise OAuthError(401, "Invalid iss/sub claims in JWT")
    try:
        keys = await state.jwks.keys()
        key = find_key(keys, kid)
        if key is None:
            # A kid we have not seen may be a freshly rotated key: refetch before refusing.
            key = find_key(await state.jwks.keys(refresh=True), kid)
    except KeyRegistrationError as exc:
        raise OAuthError(403, str(exc), error="public_key error") from exc
    if key is None:
        raise OAuthError(401, "Invalid 'kid' header in JWT - no matching public key")
    token = jws.JWS()
    try:
        token.deserialize(assertion)
        token.verify(key, alg="RS512")
    except (jws.InvalidJWSSignature, jws.InvalidJWSObject, ValueError) as exc:
        raise OAuthError(401, "Signature verification failed") from exc
    if claims.get("aud") != f"{state.base_url(request)}/oauth2/token":
        raise OAuthError(401, "Missing or invalid aud claim in JWT")
    jti = claims.get("jti")
    if not jti:
        raise OAuthError(400, "Missing jti claim in JWT")
    exp = claims.get("exp")
    if exp is None:
        raise OAuthError(400, "Missing exp claim in JWT")
    now = int(time.time())
    if exp <= now:
        raise OAuthError(400, "Invalid exp claim in JWT - JWT has expired")
    if exp > now + MAX_LIFETIME + EXP_GRACE:
        raise OAuthError(400, "Invalid exp claim in JWT - more than 5 minutes in future")
    if not state.jtis.use(jti, float(exp)):
        raise OAuthError(400, "Non-unique jti claim in JWT")


@router.post("/oauth2/token")
async def token(request: Request) -> Response:
    """Exchange a signed client assertion for an opaque access token."""
    try:
        raw = await request.form()
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
    except (ValueError, AssertionError):
        form = {}
    try:
        await _validate(request, form)
    except OAuthError as exc:
        return json_response(
            oauth_error(exc.error, exc.description), exc.status, media_type="application/json"
        )
    state = get_state(request)
    access_token = state.tokens.issue()
    return json_response(
        {
            "access_token": access_token,
            "expires_in": str(599),
            "token_type": "Bearer",  # nosec B105
            "issued_at": str(int(time.time() * 1000)),
        },
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
