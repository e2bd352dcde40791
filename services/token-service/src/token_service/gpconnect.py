"""The GP Connect consumer JWT (audit and provenance; unsigned, `alg: none`).

GP Connect spec 1.6, page integration_cross_organisation_audit_and_provenance: one JWT per request,
header {"alg":"none","typ":"JWT"}, empty signature (the token ends with "."), and the claims iss,
sub, aud, exp (= iat + 300), iat, reason_for_request, requested_scope, requesting_device,
requesting_organization and requesting_practitioner. GP Connect 1.x dropped the 0.x
`requested_record` claim, so the patient's NHS number is not put in the token.

Every identifier comes from the settings (our Spine endpoint, ASID, identifier systems, ODS map)
or from the RequestContext (the XUA user and organisation); none is fixed here.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from token_service.config import Settings, valid_requested_scope
from xcagw.common.v1 import common_pb2
from xcagw_common.ods import resolve_ods_code

# Spec: "The expiration time SHALL be set to 5 minutes after the token creation time".
GP_CONNECT_JWT_LIFETIME_SECONDS = 300
# Spec: "As GP Connect only supports usage for direct care, this value SHALL be set to directcare".
REASON_FOR_REQUEST = "directcare"
# Spec (requesting_practitioner): "the value UNK if the user is not logged on with an NHS
# smartcard".
UNKNOWN_SDS_ID = "UNK"

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# SDS user ids and role profile ids are 12-digit numbers (smartcard UUID, URP id).
_SDS_ID = re.compile(r"^\d{12}$")
_PREFIXES = frozenset(
    {"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "professor", "sir", "dame", "rev", "revd"}
)


@dataclass
class GpConnectJwtError(Exception):
    code: grpc.StatusCode
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def _b64(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _is_prefix(token: str) -> bool:
    return token.rstrip(".").lower() in _PREFIXES


def parse_person_name(text: str) -> dict[str, Any]:
    """A STU3 HumanName from a free-text user name, never failing on unusual shapes.

    Accepts "Family, Given", "Dr Given Family", an HL7 v2 XCN ("id^Family^Given^^^Dr") and a
    single word (taken as the family name). nhs-apis.md §4.3: Xhuma raised on names without ", ".
    """
    text = " ".join(text.split())
    family = ""
    given: list[str] = []
    prefix: list[str] = []
    if "^" in text:
        parts = [p.strip() for p in text.split("^")] + [""] * 6
        family = parts[1]
        given = [g for g in (parts[2], parts[3]) if g]
        prefix = [parts[5]] if parts[5] else []
    elif "," in text:
        family_part, _, rest = text.partition(",")
        family = family_part.strip()
        words = rest.split()
        while words and _is_prefix(words[0]):
            prefix.append(words.pop(0))
        given = words
    else:
        words = text.split()
        while len(words) > 1 and _is_prefix(words[0]):
            prefix.append(words.pop(0))
        if words:
            family = words[-1]
            given = words[:-1]
    name: dict[str, Any] = {"family": family or text}
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = prefix
    return name


def practitioner_id(settings: Settings, user_id: str) -> str:
    """A FHIR logical id for the user: the user id itself when it is a valid id, else a stable
    UUID derived from it (XUA subject-ids are often display names with spaces)."""
    if _FHIR_ID.fullmatch(user_id):
        return user_id
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{settings.local_user_id_system}|{user_id}"))


def build_claims(
    settings: Settings,
    context: common_pb2.RequestContext,
    audience: str,
    requested_scope: str,
    now: float,
) -> dict[str, Any]:
    """The claims of the GP Connect JWT, or GpConnectJwtError."""
    user_id = context.user_id.strip()
    if not user_id:
        # Spec: "SHALL NOT be populated with fixed values or a generic system user".
        raise GpConnectJwtError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "MISSING_REQUESTING_USER",
            "RequestContext.user_id (the XUA requesting user) is required",
        )
    if not re.match(r"^https?://\S+$", audience):
        raise GpConnectJwtError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_AUDIENCE",
            "audience must be the provider's service root URL (http or https)",
        )
    scope = requested_scope.strip() or settings.gpc_requested_scope
    if not valid_requested_scope(scope):
        raise GpConnectJwtError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUESTED_SCOPE",
            "requested_scope must be e.g. 'patient/*.read' (optionally with ' conf/N')",
        )
    missing = [
        env
        for env, value in (
            ("TOKEN_SERVICE_GPC_ISSUER", settings.gpc_issuer),
            ("TOKEN_SERVICE_GPC_CONSUMER_ASID", settings.gpc_consumer_asid),
        )
        if not value
    ]
    if missing:
        raise GpConnectJwtError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "GPC_NOT_CONFIGURED",
            "GP Connect consumer settings missing: " + ", ".join(missing),
        )
    # Shared with pds-adapter (NHSD-End-User-Organisation-ODS), so a partner's organisation id
    # resolves to the same ODS code in the JWT and in the PDS header.
    ods = resolve_ods_code(
        context.organization_id,
        settings.gpc_organisation_ods_map,
        settings.gpc_default_ods_code,
    )
    if not ods:
        raise GpConnectJwtError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "ODS_CODE_UNRESOLVED",
            "no ODS code for the requesting organisation: map its id in "
            "TOKEN_SERVICE_GPC_ORGANISATION_ODS_MAP or set TOKEN_SERVICE_GPC_DEFAULT_ODS_CODE",
        )
    org_name = context.organization_name.strip() or settings.gpc_default_organisation_name
    if not org_name:
        raise GpConnectJwtError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "MISSING_REQUESTING_ORGANISATION",
            "RequestContext.organization_name (XUA subject:organization) is required",
        )

    iat = int(now)
    pid = practitioner_id(settings, user_id)
    role = context.user_role.strip()
    sds_user = user_id if _SDS_ID.fullmatch(user_id) else UNKNOWN_SDS_ID
    sds_role = role if _SDS_ID.fullmatch(role) else UNKNOWN_SDS_ID
    identifiers = [
        {"system": settings.gpc_sds_user_id_system, "value": sds_user},
        {"system": settings.gpc_sds_role_profile_id_system, "value": sds_role},
        {"system": settings.local_user_id_system, "value": user_id},
    ]
    if role and sds_role == UNKNOWN_SDS_ID:
        # Spec: "a unique local user or user-role identifier" (the XUA subject:role code).
        identifiers.append({"system": settings.local_role_system, "value": role})
    return {
        "iss": settings.gpc_issuer,
        "sub": pid,
        "aud": audience,
        "exp": iat + GP_CONNECT_JWT_LIFETIME_SECONDS,
        "iat": iat,
        "reason_for_request": REASON_FOR_REQUEST,
        "requested_scope": scope,
        "requesting_device": {
            "resourceType": "Device",
            "identifier": [
                {
                    "system": settings.gpc_device_identifier_system,
                    "value": settings.gpc_consumer_asid,
                }
            ],
            "model": settings.gpc_device_model,
            "version": settings.gpc_device_version,
        },
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [{"system": settings.gpc_ods_system, "value": ods}],
            "name": org_name,
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": pid,
            "identifier": identifiers,
            "name": [parse_person_name(context.user_name.strip() or user_id)],
        },
    }


def encode_unsigned(claims: dict[str, Any]) -> str:
    """`base64url(header).base64url(payload).` with an empty signature (RFC 7519 §6)."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
