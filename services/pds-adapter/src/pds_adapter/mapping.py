"""Pure mapping between PDS FHIR R4 JSON and the gRPC messages (no I/O, unit-testable).

PDS payloads are handled as dicts and only the fields the gateway uses are read (nhs-apis.md §6.3):
real PDS data carries many UK Core extensions we do not need, and a strict model would reject
records for fields we never look at. Every reader tolerates a missing or oddly typed element.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from xcagw.pds.v1 import pds_adapter_pb2

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
VERIFICATION_STATUS_EXTENSION = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
)
SPINE_ERROR_SYSTEM = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"

UNRESTRICTED_LABEL = "U"
# nhs-apis.md §1.6: R strips location; V is undocumented, treat it as at least R; S (sensitive)
# likewise. REDACTED is never served (INVALIDATED_RESOURCE instead) but would be at least as bad.
RESTRICTED_LABELS = frozenset({"R", "V", "S", "REDACTED"})
# When a record carries several labels the most restrictive one is reported.
_LABEL_RANK = {"REDACTED": 5, "V": 4, "S": 3, "R": 2}

GENDERS = frozenset({"male", "female", "other", "unknown"})
FAMILY_MAX_LENGTH = 35  # nhs-apis.md §1.4
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NHS_NUMBER_LIKE_RE = re.compile(r"(?<!\d)\d{3} ?\d{3} ?\d{4}(?!\d)")
# PDS diagnostics quote the offending value ("Invalid value - 'Smith' in field 'family'"): the
# value may be a name or a date of birth, the field or header name after it is safe to keep.
_QUOTED_RE = re.compile(r"'[^']*'")
_SAFE_QUOTE_PREFIXES = ("field ", "header ")


class FhirShapeError(ValueError):
    """A PDS payload is not the JSON resource it should be."""


class SearchValidationError(ValueError):
    """A search request PDS would reject, caught before calling it."""


# ---------------------------------------------------------------------------------- helpers


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    """A JSON object from a PDS body; FhirShapeError for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirShapeError("PDS returned a body that is not JSON") from exc
    if not isinstance(value, dict):
        raise FhirShapeError("PDS returned JSON that is not an object")
    return value


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _strs(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def scrub_diagnostics(text: str) -> str:
    """PDS diagnostics without patient data: quoted values and NHS-number-like digits removed."""

    def quoted(match: re.Match[str]) -> str:
        before = text[: match.start()]
        return match.group(0) if before.endswith(_SAFE_QUOTE_PREFIXES) else "'[value]'"

    return _NHS_NUMBER_LIKE_RE.sub("[nhs-number]", _QUOTED_RE.sub(quoted, text))


# ---------------------------------------------------------------------------------- Patient


def security_label(resource: Mapping[str, Any]) -> str:
    """The confidentiality code from `meta.security` (most restrictive if several), or ""."""
    meta = resource.get("meta")
    labels = _dicts(meta.get("security")) if isinstance(meta, Mapping) else []
    codes = [
        _str(label.get("code"))
        for label in labels
        if _str(label.get("system")) in ("", CONFIDENTIALITY_SYSTEM) and _str(label.get("code"))
    ]
    if not codes:
        return ""
    return max(codes, key=lambda code: _LABEL_RANK.get(code, 1 if code != "U" else 0))


def is_restricted_label(label: str) -> bool:
    """True unless the record is explicitly unrestricted (U).

    Fail closed: R, V, S and REDACTED are restricted by definition (nhs-apis.md §1.6), and a
    missing or unknown label is treated the same way, since disclosing a restricted patient's
    location is the one mistake that cannot be undone.
    """
    return label != UNRESTRICTED_LABEL


def _nhs_identifier(resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # Never assume identifier[0] is the NHS number (nhs-apis.md §5).
    for identifier in _dicts(resource.get("identifier")):
        if _str(identifier.get("system")) == NHS_NUMBER_SYSTEM:
            return identifier
    return None


def _verification_status(identifier: Mapping[str, Any] | None) -> str:
    if identifier is None:
        return ""
    for extension in _dicts(identifier.get("extension")):
        if _str(extension.get("url")) != VERIFICATION_STATUS_EXTENSION:
            continue
        concept = extension.get("valueCodeableConcept")
        if isinstance(concept, Mapping):
            for coding in _dicts(concept.get("coding")):
                if code := _str(coding.get("code")):
                    return code
    return ""


def _gp_ods_code(resource: Mapping[str, Any]) -> str:
    # nhs-apis.md §1.7: generalPractitioner[].identifier (ODS code) drives SDS and GP Connect.
    for practitioner in _dicts(resource.get("generalPractitioner")):
        identifier = practitioner.get("identifier")
        if not isinstance(identifier, Mapping):
            continue
        system = _str(identifier.get("system"))
        value = _str(identifier.get("value")).strip()
        if value and system in ("", ODS_CODE_SYSTEM):
            return value
    return ""


def _names(resource: Mapping[str, Any]) -> list[pds_adapter_pb2.HumanName]:
    # Keep every name with its use: the INT captures have only "usual" names (nhs-apis.md §1.7).
    return [
        pds_adapter_pb2.HumanName(
            use=_str(name.get("use")),
            family=_str(name.get("family")),
            given=_strs(name.get("given")),
            prefix=_strs(name.get("prefix")),
            suffix=_strs(name.get("suffix")),
        )
        for name in _dicts(resource.get("name"))
    ]


def _addresses(resource: Mapping[str, Any]) -> list[pds_adapter_pb2.Address]:
    return [
        pds_adapter_pb2.Address(
            use=_str(address.get("use")),
            line=_strs(address.get("line")),
            city=_str(address.get("city")),
            district=_str(address.get("district")),
            postal_code=_str(address.get("postalCode")),
            country=_str(address.get("country")),
        )
        for address in _dicts(resource.get("address"))
    ]


def _telecoms(resource: Mapping[str, Any]) -> list[pds_adapter_pb2.ContactPoint]:
    return [
        pds_adapter_pb2.ContactPoint(
            system=_str(telecom.get("system")),
            value=_str(telecom.get("value")),
            use=_str(telecom.get("use")),
        )
        for telecom in _dicts(resource.get("telecom"))
    ]


def patient_from_fhir(
    resource: Mapping[str, Any], *, requested_nhs_number: str = ""
) -> pds_adapter_pb2.Patient:
    """The normalised Patient for a PDS FHIR R4 Patient resource.

    - `nhs_number` is the resource id (the current number); `superseded_from` is set to the
      requested number when PDS answered with another record (nhs-apis.md §0.5, §1.6).
    - Restricted patients (see `is_restricted_label`) never get addresses, telecoms or a GP ODS
      code in the normalised message, even if the payload had them: PDS removes them and the
      adapter must not disclose what PDS was meant to withhold. The raw JSON is untouched.
    """
    if _str(resource.get("resourceType")) != "Patient":
        raise FhirShapeError("PDS returned a resource that is not a Patient")
    identifier = _nhs_identifier(resource)
    nhs_number = _str(resource.get("id")).strip()
    if not nhs_number and identifier is not None:
        nhs_number = _str(identifier.get("value")).strip()
    if not nhs_number:
        raise FhirShapeError("PDS returned a Patient without an id")
    label = security_label(resource)
    restricted = is_restricted_label(label)
    meta = resource.get("meta")
    patient = pds_adapter_pb2.Patient(
        nhs_number=nhs_number,
        superseded_from=(
            requested_nhs_number
            if requested_nhs_number and requested_nhs_number != nhs_number
            else ""
        ),
        names=_names(resource),
        gender=_str(resource.get("gender")),
        birth_date=_str(resource.get("birthDate")),
        deceased_date_time=_str(resource.get("deceasedDateTime")),
        security_label=label,
        restricted=restricted,
        verification_status=_verification_status(identifier),
        version_id=_str(meta.get("versionId")) if isinstance(meta, Mapping) else "",
    )
    if not restricted:
        patient.addresses.extend(_addresses(resource))
        patient.telecoms.extend(_telecoms(resource))
        patient.gp_ods_code = _gp_ods_code(resource)
    return patient


# ---------------------------------------------------------------------------------- search


def patients_from_bundle(
    bundle: Mapping[str, Any],
) -> list[tuple[pds_adapter_pb2.Patient, float]]:
    """(patient, score) for each Patient entry of a searchset Bundle, in PDS order (best first).

    An empty result has no `entry` at all (nhs-apis.md §1.2).
    """
    if _str(bundle.get("resourceType")) != "Bundle":
        raise FhirShapeError("PDS returned a search result that is not a Bundle")
    results: list[tuple[pds_adapter_pb2.Patient, float]] = []
    for entry in _dicts(bundle.get("entry")):
        resource = entry.get("resource")
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
            continue
        search = entry.get("search")
        score = search.get("score") if isinstance(search, Mapping) else None
        value = float(score) if isinstance(score, int | float) else 0.0
        results.append((patient_from_fhir(resource), value))
    return results


def _date(value: str, field: str) -> dt.date:
    if not _DATE_RE.match(value):
        raise SearchValidationError(f"{field} must be a date as yyyy-mm-dd")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise SearchValidationError(f"{field} is not a real date") from exc


def _clean(value: str, field: str) -> str:
    if _CONTROL_RE.search(value):
        raise SearchValidationError(f"{field} contains control characters")
    return value.strip()


def search_params(
    request: pds_adapter_pb2.SearchPatientsRequest, *, max_results: int = 1
) -> list[tuple[str, str]]:
    """PDS query parameters for an application-restricted search (nhs-apis.md §1.4).

    Checks what PDS would reject anyway, so callers get a precise message without a round trip:
    a birth date is required (every PDS search recipe includes one), dates are real yyyy-mm-dd
    dates in order, gender is a FHIR gender, family is at most 35 characters, and a "*" wildcard
    is neither in the first two characters nor combined with fuzzy matching.
    """
    family = _clean(request.family, "family")
    given = [_clean(g, "given") for g in request.given if g.strip()]
    gender = _clean(request.gender, "gender").lower()
    postal_code = _clean(request.postal_code, "postal_code")
    date_from = _clean(request.birth_date_from, "birth_date_from")
    date_to = _clean(request.birth_date_to, "birth_date_to")

    if not date_from and not date_to:
        raise SearchValidationError(
            "a birth date (birth_date_from and/or birth_date_to) is required"
        )
    if not family and not given:
        raise SearchValidationError("family or given is required")
    if len(family) > FAMILY_MAX_LENGTH:
        raise SearchValidationError(f"family must be at most {FAMILY_MAX_LENGTH} characters")
    if gender and gender not in GENDERS:
        raise SearchValidationError("gender must be one of male, female, other, unknown")
    wildcarded = [v for v in (family, *given, postal_code) if "*" in v]
    if wildcarded and request.fuzzy:
        raise SearchValidationError("wildcards cannot be combined with fuzzy matching")
    if "*" in family[:2]:
        raise SearchValidationError("a wildcard in family must come after the first 2 characters")

    params: list[tuple[str, str]] = []
    if family:
        params.append(("family", family))
    params.extend(("given", g) for g in given)
    if gender:
        params.append(("gender", gender))
    if date_from and date_to:
        start, end = _date(date_from, "birth_date_from"), _date(date_to, "birth_date_to")
        if start > end:
            raise SearchValidationError("birth_date_from must not be after birth_date_to")
        if start == end:
            params.append(("birthdate", f"eq{date_from}"))
        else:
            params.extend([("birthdate", f"ge{date_from}"), ("birthdate", f"le{date_to}")])
    elif date_from:
        _date(date_from, "birth_date_from")
        params.append(("birthdate", f"ge{date_from}"))
    else:
        _date(date_to, "birth_date_to")
        params.append(("birthdate", f"le{date_to}"))
    if postal_code:
        # address-postcode is deprecated; sending both is INVALID_SEARCH_DATA (nhs-apis.md §1.4).
        params.append(("address-postalcode", postal_code))
    if request.fuzzy:
        params.append(("_fuzzy-match", "true"))
    if request.exact:
        params.append(("_exact-match", "true"))
    if request.history:
        params.append(("_history", "true"))
    # Application-restricted mode: _max-results must be 1, else 403 INVALID_VALUE (§1.4).
    params.append(("_max-results", str(max_results)))
    return params


# ------------------------------------------------------------------------------ OperationOutcome


def outcome_codes(outcome: Mapping[str, Any]) -> list[str]:
    """The Spine error codes of every issue (details.coding[].code), in order."""
    codes: list[str] = []
    for issue in _dicts(outcome.get("issue")):
        details = issue.get("details")
        if not isinstance(details, Mapping):
            continue
        for coding in _dicts(details.get("coding")):
            system = _str(coding.get("system"))
            code = _str(coding.get("code")).strip()
            if code and (not system or system.startswith("https://fhir.nhs.uk/")):
                codes.append(code)
    return codes


def is_too_many_matches(outcome: Mapping[str, Any]) -> bool:
    """PDS's "several matches" answer: HTTP 200 OperationOutcome (nhs-apis.md §0.3, §1.5)."""
    if _str(outcome.get("resourceType")) != "OperationOutcome":
        return False
    if "TOO_MANY_MATCHES" in outcome_codes(outcome):
        return True
    return any(_str(i.get("code")) == "multiple-matches" for i in _dicts(outcome.get("issue")))


def outcome_summary(outcome: Mapping[str, Any]) -> str:
    """A short human-readable text from the first issue (display and diagnostics), scrubbed."""
    for issue in _dicts(outcome.get("issue")):
        parts: list[str] = []
        details = issue.get("details")
        if isinstance(details, Mapping):
            for coding in _dicts(details.get("coding")):
                display = _str(coding.get("display")).strip()
                if display and not display.startswith("#("):
                    parts.append(display)
                    break
        diagnostics = _str(issue.get("diagnostics")).strip()
        if diagnostics and not diagnostics.startswith("#("):
            parts.append(diagnostics)
        if parts:
            return scrub_diagnostics(": ".join(parts))[:300]
    return ""


def iter_patient_resources(document: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every Patient in a document: itself, or the Patient entries of a Bundle."""
    if document.get("resourceType") == "Patient":
        yield document
        return
    for entry in _dicts(document.get("entry")):
        resource = entry.get("resource")
        if isinstance(resource, Mapping) and resource.get("resourceType") == "Patient":
            yield resource
