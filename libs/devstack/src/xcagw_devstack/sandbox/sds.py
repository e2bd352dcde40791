"""SDS FHIR API: Device (ASID, party key) and Endpoint (service root URL) per ODS code.

Shapes follow NHSDigital/spine-directory-service-api examples (nhs-apis.md §3.1); the `apikey`
header is required like on the API platform.
"""

from __future__ import annotations

import hmac
import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from xcagw_devstack.sandbox.outcomes import json_response, pds_outcome
from xcagw_devstack.sandbox.panel import PRACTICES, GpPractice
from xcagw_devstack.sandbox.state import get_state

router = APIRouter()
BASE = "/spine-directory/FHIR/R4"

ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION_SYSTEM = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
ASID_SYSTEM = "https://fhir.nhs.uk/Id/nhsSpineASID"
GET_STRUCTURED = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
STRUCTURED_INTERACTIONS = frozenset(
    {GET_STRUCTURED, "urn:nhs:names:services:gpconnect:structured:fhir:rest:read:metadata-1"}
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NS = uuid.UUID("6f1c1d0e-5b1f-4c53-9a59-3c8f8a7e0d11")


class SdsError(Exception):
    def __init__(self, status: int, code: str, issue_type: str, diagnostics: str) -> None:
        super().__init__(code)
        self.status, self.code, self.issue_type, self.diagnostics = (
            status,
            code,
            issue_type,
            diagnostics,
        )


def structured_base(base_url: str, ods: str) -> str:
    """The GP Connect Access Record Structured service root URL of a practice."""
    return f"{base_url}/gpconnect/{ods}/STU3/1/gpconnect/structured/fhir"


def _headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("X-Request-ID", "X-Correlation-ID"):
        value = request.headers.get(name)
        if value:
            out[name] = value
    return out


def _check(
    request: Request, *, require_interaction: bool
) -> tuple[GpPractice | None, str, set[str], set[str]]:
    state = get_state(request)
    key = request.headers.get("apikey", "")
    if not key or not hmac.compare_digest(key.encode(), state.settings.sds_api_key.encode()):
        raise SdsError(401, "ACCESS_DENIED", "forbidden", "Invalid or missing apikey header")
    rid = request.headers.get("x-request-id")
    if rid is not None and not _UUID.match(rid):
        raise SdsError(
            400, "INVALID_VALUE", "value", f"Invalid value - '{rid}' in header 'X-Request-ID'"
        )
    organizations: list[str] = []
    interactions: set[str] = set()
    party_keys: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name == "organization":
            organizations.append(value)
        elif name == "identifier":
            system, sep, code = value.partition("|")
            if not sep or not code:
                raise SdsError(
                    400,
                    "INVALID_VALUE",
                    "value",
                    f"Invalid value - '{value}' in field 'identifier'",
                )
            if system == INTERACTION_SYSTEM:
                interactions.add(code)
            elif system == PARTY_KEY_SYSTEM:
                party_keys.add(code)
            else:
                raise SdsError(
                    400, "INVALID_VALUE", "value", f"Unsupported identifier system '{system}'"
                )
        elif name != "manufacturing-organization":
            raise SdsError(400, "INVALID_VALUE", "value", f"Unsupported query parameter '{name}'")
    if len(organizations) != 1:
        raise SdsError(
            400, "MISSING_VALUE", "required", "Missing or invalid organization query parameter"
        )
    system, sep, ods = organizations[0].partition("|")
    if system != ODS_SYSTEM or not sep or not ods:
        raise SdsError(
            400, "INVALID_VALUE", "value", "Missing or invalid organization query parameter"
        )
    if require_interaction and not interactions:
        raise SdsError(
            400,
            "MISSING_VALUE",
            "required",
            f"Missing identifier with system '{INTERACTION_SYSTEM}'",
        )
    if not interactions and not party_keys:
        raise SdsError(400, "MISSING_VALUE", "required", "Missing identifier query parameter")
    practice = next((p for p in PRACTICES if p.ods == ods.upper() and p.in_sds), None)
    return practice, ods, interactions, party_keys


def _matches(
    practice: GpPractice | None, interactions: set[str], party_keys: set[str]
) -> list[str]:
    """The interactions of `practice` that match the query."""
    if practice is None:
        return []
    if party_keys and practice.party_key not in party_keys:
        return []
    wanted = interactions or set(STRUCTURED_INTERACTIONS)
    return sorted(wanted & STRUCTURED_INTERACTIONS)


def _bundle(request: Request, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [
            {
                "fullUrl": f"{str(request.url).split('?')[0]}/{e['id']}",
                "resource": e,
                "search": {"mode": "match"},
            }
            for e in entries
        ],
    }


def _interaction_ext(interaction: str) -> dict[str, Any]:
    return {
        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-SDS-NhsServiceInteractionId",
        "valueReference": {"identifier": {"system": INTERACTION_SYSTEM, "value": interaction}},
    }


@router.get(BASE + "/Device")
async def devices(request: Request) -> Response:
    """Accredited systems (ASID, party key) of an organisation for an interaction."""
    try:
        practice, _ods, interactions, party_keys = _check(request, require_interaction=True)
    except SdsError as exc:
        return json_response(
            pds_outcome(exc.code, exc.issue_type, diagnostics=exc.diagnostics), exc.status
        )
    entries = []
    for interaction in _matches(practice, interactions, party_keys):
        assert practice is not None  # noqa: S101 - _matches returns nothing without a practice
        entries.append(
            {
                "resourceType": "Device",
                "id": str(uuid.uuid5(_NS, f"device:{practice.ods}:{interaction}")),
                "identifier": [
                    {"system": ASID_SYSTEM, "value": practice.asid},
                    {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
                ],
                "extension": [
                    {
                        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-SDS-ManufacturingOrganisation",
                        "valueReference": {"identifier": {"system": ODS_SYSTEM, "value": "YGM24"}},
                    },
                    _interaction_ext(interaction),
                ],
                "owner": {"identifier": {"system": ODS_SYSTEM, "value": practice.ods}},
            }
        )
    return json_response(_bundle(request, entries), headers=_headers(request))


@router.get(BASE + "/Endpoint")
async def endpoints(request: Request) -> Response:
    """Message handling endpoints (the GP Connect service root URL) of an organisation."""
    try:
        practice, _ods, interactions, party_keys = _check(request, require_interaction=False)
    except SdsError as exc:
        return json_response(
            pds_outcome(exc.code, exc.issue_type, diagnostics=exc.diagnostics), exc.status
        )
    base = get_state(request).base_url(request)
    entries = []
    for interaction in _matches(practice, interactions, party_keys):
        assert practice is not None  # noqa: S101 - _matches returns nothing without a practice
        address = structured_base(base, practice.ods)
        host = address.split("//", 1)[-1].split("/", 1)[0]
        entries.append(
            {
                "resourceType": "Endpoint",
                "id": str(uuid.uuid5(_NS, f"endpoint:{practice.ods}:{interaction}")),
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "hl7-fhir-rest",
                    "display": "HL7 FHIR",
                },
                "payloadType": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                "code": "any",
                                "display": "Any",
                            }
                        ]
                    }
                ],
                "address": address,
                "managingOrganization": {
                    "identifier": {"system": ODS_SYSTEM, "value": practice.ods}
                },
                "identifier": [
                    {"system": "https://fhir.nhs.uk/Id/nhsMhsFQDN", "value": host},
                    {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
                    {"system": "https://fhir.nhs.uk/Id/nhsMhsCPAId", "value": f"S{practice.asid}"},
                    {"system": "https://fhir.nhs.uk/Id/nhsMHSId", "value": practice.asid},
                ],
                "extension": [_interaction_ext(interaction)],
            }
        )
    return json_response(_bundle(request, entries), headers=_headers(request))
