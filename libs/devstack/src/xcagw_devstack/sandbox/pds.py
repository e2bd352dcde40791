"""PDS FHIR R4 (application-restricted): GET Patient/{id} and GET Patient?search.

Behaviour follows the PDS FHIR API specification and nhs-apis.md §1: bearer token and
X-Request-ID checks, Modulus 11, superseded and invalidated records, restricted (R/V) patients
stripped of address, telecom and GP, single-match searches with TOO_MANY_MATCHES as an HTTP 200
OperationOutcome, and HTTP 429 beyond the configured rate.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from xcagw_common.nhs_number import is_valid_nhs_number
from xcagw_devstack.sandbox.outcomes import json_response, pds_outcome
from xcagw_devstack.sandbox.panel import PANEL, PanelPatient, get_patient
from xcagw_devstack.sandbox.state import get_state

router = APIRouter()
BASE = "/personal-demographics/FHIR/R4"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE_PARAM = re.compile(r"^(eq|ge|le)?(\d{4}-\d{2}-\d{2})$")
_SEARCH_PARAMS = frozenset(
    {
        "family",
        "given",
        "gender",
        "birthdate",
        "death-date",
        "address-postalcode",
        "address-postcode",
        "general-practitioner",
        "email",
        "phone",
        "_fuzzy-match",
        "_exact-match",
        "_history",
        "_max-results",
    }
)
_REPEATABLE = frozenset({"given", "birthdate", "death-date"})
_DEATH_NOTICE = "Formal - death notice received from Registrar of Deaths"
_SECURITY_DISPLAY = {"U": "unrestricted", "R": "restricted", "V": "very restricted"}
_VERIFIED = {
    "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
    "valueCodeableConcept": {
        "coding": [
            {
                "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus",
                "version": "1.0.0",
                "code": "01",
                "display": "Number present and verified",
            }
        ]
    },
}


class PdsError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        issue_type: str,
        diagnostics: str | None = None,
        headers: dict[str, str] | None = None,
        severity: str = "error",
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.issue_type = issue_type
        self.diagnostics = diagnostics
        self.headers = headers or {}
        self.severity = severity


def _period(start: str) -> dict[str, str]:
    return {"start": start}


def patient_resource(p: PanelPatient, *, search: bool = False) -> dict[str, Any]:
    """The PDS R4 Patient for a panel entry (a search result carries less than a GET)."""
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": p.nhs_number,
        "identifier": [
            {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": p.nhs_number,
                "extension": [_VERIFIED],
            }
        ],
        "meta": {
            "versionId": "2",
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                    "code": p.security,
                    "display": _SECURITY_DISPLAY[p.security],
                }
            ],
        },
        "name": [
            {
                "id": f"N{p.nhs_number[-4:]}",
                "use": "usual",
                "period": _period("2000-01-01"),
                "given": list(p.given),
                "family": p.family,
                "prefix": [p.prefix],
            }
        ],
        "gender": p.gender,
        "birthDate": p.birth_date,
    }
    extensions: list[dict[str, Any]] = []
    if p.deceased:
        res["deceasedDateTime"] = p.deceased
        extensions.append(
            {
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeathNotificationStatus",
                "extension": [
                    {
                        "url": "deathNotificationStatus",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DeathNotificationStatus",
                                    "version": "1.0.0",
                                    "code": "2",
                                    "display": _DEATH_NOTICE,
                                }
                            ]
                        },
                    },
                    {"url": "systemEffectiveDate", "valueDateTime": p.deceased},
                ],
            }
        )
    if not p.restricted:
        # PDS: restricted records never carry address, telecom, GP or pharmacies.
        res["address"] = [
            {
                "id": f"A{p.nhs_number[-4:]}",
                "period": _period("2010-01-01"),
                "use": "home",
                "line": [*p.address_lines, p.city],
                "postalCode": p.postcode,
                "extension": [
                    {
                        "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AddressKey",
                        "extension": [
                            {
                                "url": "type",
                                "valueCoding": {
                                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AddressKeyType",
                                    "code": "PAF",
                                },
                            },
                            {"url": "value", "valueString": p.nhs_number[2:]},
                        ],
                    }
                ],
            }
        ]
        telecom: list[dict[str, Any]] = []
        if p.phone:
            telecom.append(
                {
                    "id": "T1",
                    "period": _period("2015-01-01"),
                    "system": "phone",
                    "value": p.phone,
                    "use": "home",
                }
            )
        if p.email:
            telecom.append(
                {
                    "id": "T2",
                    "period": _period("2015-01-01"),
                    "system": "email",
                    "value": p.email,
                    "use": "home",
                }
            )
        if telecom:
            res["telecom"] = telecom
        if p.gp_ods:
            res["generalPractitioner"] = [
                {
                    "id": f"G{p.nhs_number[-4:]}",
                    "type": "Organization",
                    "identifier": {
                        "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                        "value": p.gp_ods,
                        "period": _period("2012-03-01"),
                    },
                }
            ]
        if not search:
            extensions.append(
                {
                    "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NominatedPharmacy",
                    "valueReference": {
                        "identifier": {
                            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                            "value": "FA123",
                        }
                    },
                }
            )
    if not search:
        extensions.append(
            {
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSCommunication",
                "extension": [
                    {
                        "url": "language",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-HumanLanguage",
                                    "version": "1.0.0",
                                    "code": "en",
                                    "display": "English",
                                }
                            ]
                        },
                    },
                    {"url": "interpreterRequired", "valueBoolean": False},
                ],
            }
        )
    if extensions:
        res["extension"] = extensions
    return res


def _mirror_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    rid = request.headers.get("x-request-id")
    if rid and _UUID.match(rid):
        headers["X-Request-ID"] = rid
    cid = request.headers.get("x-correlation-id")
    if cid:
        headers["X-Correlation-ID"] = cid
    return headers


def _guard(request: Request) -> None:
    """Apigee-level checks before PDS itself: token, spike arrest, X-Request-ID."""
    state = get_state(request)
    auth = request.headers.get("authorization")
    if auth is None:
        raise PdsError(401, "ACCESS_DENIED", "forbidden", "Missing Authorization header")
    scheme, _, token = auth.partition(" ")
    if not auth.strip():
        raise PdsError(401, "ACCESS_DENIED", "forbidden", "Empty Authorization header")
    if scheme.lower() != "bearer" or not state.tokens.is_valid(token.strip()):
        raise PdsError(401, "ACCESS_DENIED", "forbidden", "Invalid Access Token")
    if not state.pds_limiter.allow():
        raise PdsError(
            429,
            "TOO_MANY_REQUESTS",
            "throttled",
            "Your app has exceeded its rate limit and is being rate limited. Retry after a pause.",
            headers={"Retry-After": "1"},
        )
    rid = request.headers.get("x-request-id")
    if rid is None:
        raise PdsError(
            400,
            "MISSING_VALUE",
            "required",
            "Invalid request with error - "
            "X-Request-ID header must be supplied to access this resource",
        )
    if not _UUID.match(rid):
        raise PdsError(
            400, "INVALID_VALUE", "value", f"Invalid value - '{rid}' in header 'X-Request-ID'"
        )


def _error(request: Request, exc: PdsError) -> Response:
    headers = {**_mirror_headers(request), **exc.headers}
    return json_response(
        pds_outcome(exc.code, exc.issue_type, diagnostics=exc.diagnostics, severity=exc.severity),
        exc.status,
        headers=headers,
    )


@router.get(BASE + "/Patient/{nhs_number}")
async def read_patient(request: Request, nhs_number: str) -> Response:
    """GET Patient/{id}: superseded numbers resolve to the retained record (a different id)."""
    try:
        _guard(request)
        if not is_valid_nhs_number(nhs_number) or " " in nhs_number:
            raise PdsError(400, "INVALID_RESOURCE_ID", "value")
        patient = get_patient(nhs_number)
        seen: set[str] = set()
        while patient is not None and patient.superseded_by and patient.nhs_number not in seen:
            seen.add(patient.nhs_number)
            patient = get_patient(patient.superseded_by)
        if patient is None:
            # Real PDS marks "not found" as severity information (karate stub RESOURCE_NOT_FOUND).
            raise PdsError(404, "RESOURCE_NOT_FOUND", "not-found", severity="information")
        if patient.invalidated:
            raise PdsError(404, "INVALIDATED_RESOURCE", "processing")
    except PdsError as exc:
        return _error(request, exc)
    body = patient_resource(patient)
    headers = {**_mirror_headers(request), "ETag": f'W/"{body["meta"]["versionId"]}"'}
    return json_response(body, headers=headers)


@dataclass
class _Query:
    family: str | None
    given: list[str]
    gender: str | None
    birthdate: list[tuple[str, dt.date]]
    death_date: list[tuple[str, dt.date]]
    postcode: str | None
    gp: str | None
    email: str | None
    phone: str | None
    fuzzy: bool
    exact: bool


def _bool(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise PdsError(
            400, "INVALID_VALUE", "value", f"Invalid value - '{value}' in field '{name}'"
        )
    return value.lower() == "true"


def _dates(name: str, values: list[str]) -> list[tuple[str, dt.date]]:
    out: list[tuple[str, dt.date]] = []
    for v in values:
        m = _DATE_PARAM.match(v)
        try:
            if m is None:
                raise ValueError(v)
            out.append((m.group(1) or "eq", dt.date.fromisoformat(m.group(2))))
        except ValueError as exc:
            raise PdsError(
                400, "INVALID_VALUE", "value", f"Invalid value - '{v}' in field '{name}'"
            ) from exc
    if len(out) > 2:
        raise PdsError(
            400,
            "INVALID_SEARCH_DATA",
            "value",
            f"Invalid search data provided - too many '{name}' values",
        )
    return out


def _parse_query(request: Request) -> _Query:
    items = request.query_params.multi_items()
    if not items:
        raise PdsError(400, "UNSUPPORTED_SERVICE", "processing")
    params: dict[str, list[str]] = {}
    for key, value in items:
        if key not in _SEARCH_PARAMS:
            raise PdsError(
                400,
                "ADDITIONAL_PROPERTIES",
                "invariant",
                "Invalid request with error - "
                f"Additional properties are not allowed ('{key}' was unexpected)",
            )
        params.setdefault(key, []).append(value)
    for key, values in params.items():
        if len(values) > 1 and key not in _REPEATABLE:
            raise PdsError(
                400,
                "INVALID_SEARCH_DATA",
                "value",
                f"Invalid search data provided - '{key}' supplied more than once",
            )

    def one(key: str) -> str | None:
        vals = params.get(key)
        return vals[0] if vals else None

    max_results = one("_max-results")
    if max_results is not None:
        if not max_results.isdigit() or not 1 <= int(max_results) <= 50:
            raise PdsError(
                400,
                "INVALID_VALUE",
                "value",
                f"Invalid value - '{max_results}' in field '_max-results'",
            )
        if int(max_results) > 1:
            # Application-restricted access: one unique match or nothing (PDS API spec).
            raise PdsError(
                403,
                "INVALID_VALUE",
                "value",
                f"Invalid value - '{max_results}' in field '_max-results'; application-restricted "
                "access only supports 1",
            )
    fuzzy = _bool("_fuzzy-match", one("_fuzzy-match") or "false")
    exact = _bool("_exact-match", one("_exact-match") or "false")
    _bool("_history", one("_history") or "false")
    gender = one("gender")
    if gender is not None and gender not in ("male", "female", "other", "unknown"):
        raise PdsError(
            400, "INVALID_VALUE", "value", f"Invalid value - '{gender}' in field 'gender'"
        )
    if "birthdate" not in params:
        raise PdsError(
            400,
            "MISSING_VALUE",
            "required",
            "Missing value - 'birth_date/birth_date_range_start/birth_date_range_end'",
        )
    birthdate = _dates("birthdate", params["birthdate"])
    death_date = _dates("death-date", params.get("death-date", []))
    if "address-postcode" in params and "address-postalcode" in params:
        raise PdsError(
            400,
            "INVALID_SEARCH_DATA",
            "value",
            "Invalid search data provided - "
            "'address-postcode' and 'address-postalcode' cannot both be used",
        )
    postcode = one("address-postalcode") or one("address-postcode")
    family = one("family")
    given = params.get("given", [])
    if family is not None and len(family) > 35:
        raise PdsError(
            400, "INVALID_VALUE", "value", f"Invalid value - '{family}' in field 'family'"
        )
    checked: list[tuple[str, str | None]] = [
        ("family", family),
        *(("given", g) for g in given),
        ("address-postalcode", postcode),
    ]
    for field_name, field_value in checked:
        if field_value and "*" in field_value:
            if fuzzy:
                raise PdsError(
                    400,
                    "INVALID_SEARCH_DATA",
                    "value",
                    "Invalid search data provided - wildcards cannot be used with fuzzy search",
                )
            if "*" in field_value[:2]:
                raise PdsError(
                    400,
                    "INVALID_SEARCH_DATA",
                    "value",
                    "Invalid search data provided - "
                    f"wildcard not allowed in the first two characters of '{field_name}'",
                )
    if fuzzy:
        ok = (
            (given and family)
            or (family and gender and postcode)
            or (given and gender and postcode)
        )
        if not ok:
            raise PdsError(
                400,
                "INVALID_SEARCH_DATA",
                "value",
                "Invalid search data provided - fuzzy search needs given+family+birthdate, "
                "family+birthdate+gender+postcode or given+birthdate+gender+postcode",
            )
    elif not family and not one("email") and not one("phone"):
        raise PdsError(
            400,
            "INVALID_SEARCH_DATA",
            "value",
            "Invalid search data provided - a search needs at least family and birthdate",
        )
    return _Query(
        family=family,
        given=given,
        gender=gender,
        birthdate=birthdate,
        death_date=death_date,
        postcode=postcode,
        gp=one("general-practitioner"),
        email=one("email"),
        phone=one("phone"),
        fuzzy=fuzzy,
        exact=exact,
    )


def soundex(name: str) -> str:
    """American Soundex, as PDS fuzzy search uses for names."""
    codes = {
        c: str(d)
        for d, letters in enumerate(("", "BFPV", "CGJKQSXZ", "DT", "L", "MN", "R"))
        for c in letters
    }
    letters = [c for c in name.upper() if c.isalpha()]
    if not letters:
        return ""
    out = letters[0]
    last = codes.get(letters[0], "")
    for c in letters[1:]:
        code = codes.get(c, "")
        if code and code != last:
            out += code
        if c not in "HW":
            last = code
    return (out + "000")[:4]


def _wild(pattern: str, value: str) -> bool:
    regex = "^" + ".*".join(re.escape(part) for part in pattern.upper().split("*")) + "$"
    return re.match(regex, value.upper()) is not None


def _date_ok(clauses: list[tuple[str, dt.date]], value: dt.date | None) -> bool:
    if not clauses:
        return True
    if value is None:
        return False
    for op, d in clauses:
        if (op == "eq" and value != d) or (op == "ge" and value < d) or (op == "le" and value > d):
            return False
    return True


def _score(q: _Query, p: PanelPatient) -> float | None:
    """Match score (1.0 exact; lower for wildcards and fuzzy matches) or None."""
    score = 1.0
    if q.gender and p.gender != q.gender:
        return None
    if not _date_ok(q.birthdate, dt.date.fromisoformat(p.birth_date)):
        return None
    if q.death_date and not _date_ok(
        q.death_date, dt.date.fromisoformat(p.deceased[:10]) if p.deceased else None
    ):
        return None
    if q.postcode:
        if p.restricted:
            return None
        if "*" in q.postcode:
            if not _wild(q.postcode.replace(" ", ""), p.postcode.replace(" ", "")):
                return None
            score = min(score, 0.8343)
        elif q.postcode.replace(" ", "").upper() != p.postcode.replace(" ", "").upper():
            return None
    if q.gp and (p.restricted or (p.gp_ods or "").upper() != q.gp.upper()):
        return None
    if q.email and (p.restricted or p.email != q.email):
        return None
    if q.phone and (p.restricted or p.phone != q.phone):
        return None
    names = [p.family, *p.given]
    if q.fuzzy:
        targets = [(q.family, p.family)] if q.family else []
        targets += [(g, p.given[0]) for g in q.given[:1]]
        for wanted, have in targets:
            if wanted.upper() == have.upper():
                continue
            if soundex(wanted) == soundex(have) or wanted.upper() in (n.upper() for n in names):
                score = min(score, 0.8976)
                continue
            return None
        return score
    if q.family:
        if "*" in q.family:
            if not _wild(q.family, p.family):
                return None
            score = min(score, 0.8343)
        elif q.family.upper() != p.family.upper():
            return None
    for i, g in enumerate(q.given):
        if "*" in g:
            if i > 0 or not _wild(g, p.given[0]):
                return None
            score = min(score, 0.8343)
        elif (
            g.upper() not in (n.upper() for n in p.given) and g.upper() != " ".join(p.given).upper()
        ):
            return None
    return score


@router.get(BASE + "/Patient")
async def search_patients(request: Request) -> Response:
    """Application-restricted search: one unique match, or TOO_MANY_MATCHES (HTTP 200)."""
    try:
        _guard(request)
        query = _parse_query(request)
    except PdsError as exc:
        return _error(request, exc)
    matches: list[tuple[float, PanelPatient]] = []
    for p in PANEL:
        # Search never returns superseded or invalidated records (PDS API spec).
        if p.superseded_by or p.invalidated:
            continue
        score = _score(query, p)
        if score is None or (query.exact and score < 1.0):
            continue
        matches.append((score, p))
    headers = _mirror_headers(request)
    if len(matches) > 1:
        return json_response(
            pds_outcome("TOO_MANY_MATCHES", "multiple-matches", severity="information"),
            200,
            headers=headers,
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "total": len(matches),
    }
    if matches:
        base = get_state(request).base_url(request)
        score, p = matches[0]
        bundle["entry"] = [
            {
                "fullUrl": f"{base}{BASE}/Patient/{p.nhs_number}",
                "search": {"score": score},
                "resource": patient_resource(p, search=True),
            }
        ]
    return json_response(bundle, headers=headers)
