"""The `$gpc.getstructuredrecord` Parameters body and the summary of the returned Bundle.

Spec: GP Connect Access Record Structured 1.6, "Retrieve a patient's structured record"
(accessrecord_structured_development_retrieve_patient_record) and the
GPConnect-GetStructuredRecord-Operation-1 OperationDefinition.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from gpconnect_adapter.outcomes import AdapterError, from_http
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
SNOMED = "http://snomed.info/sct"
LIST_WARNING_URL = (
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-ListWarningCode-1"
)
_WHOLE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Areas:
    """The clinical areas of one request, after `all` and defaults are applied."""

    allergies: bool = False
    resolved_allergies: bool = False
    medications: bool = False
    prescription_issues: bool = False
    medication_search_from: str = ""
    problems: bool = False
    immunisations: bool = False
    consultations: bool = False
    investigations: bool = False
    referrals: bool = False
    uncategorised: bool = False
    diary_entries: bool = False


def _invalid(message: str) -> AdapterError:
    return AdapterError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER", message)


def resolve_areas(
    options: gpconnect_adapter_pb2.RecordOptions | None, today: dt.date | None = None
) -> Areas:
    """Validate RecordOptions and decide what to request.

    No options at all means the whole record; an options message that selects nothing is an
    error (GP Connect would answer INVALID_PARAMETER "No recognised parameters are provided").
    """
    if options is None or options.all:
        areas = Areas(
            allergies=True,
            resolved_allergies=True,
            medications=True,
            prescription_issues=True,
            medication_search_from=options.medication_search_from if options else "",
            problems=True,
            immunisations=True,
            consultations=True,
            investigations=True,
            referrals=True,
            uncategorised=True,
            # Diary entries have no switch of their own in RecordOptions; "everything" means them
            # too (GP Connect 1.6 includeDiaryEntries, no part parameters).
            diary_entries=True,
        )
    else:
        if options.resolved_allergies and not options.allergies:
            raise _invalid("resolved_allergies needs allergies (includeResolvedAllergies part)")
        if (
            options.prescription_issues or options.medication_search_from
        ) and not options.medications:
            raise _invalid("prescription_issues / medication_search_from need medications")
        areas = Areas(
            allergies=options.allergies,
            resolved_allergies=options.resolved_allergies,
            medications=options.medications,
            prescription_issues=options.prescription_issues,
            medication_search_from=options.medication_search_from,
            problems=options.problems,
            immunisations=options.immunisations,
            consultations=options.consultations,
            investigations=options.investigations,
            referrals=options.referrals,
            uncategorised=options.uncategorised,
        )
        if not any(
            (
                areas.allergies,
                areas.medications,
                areas.problems,
                areas.immunisations,
                areas.consultations,
                areas.investigations,
                areas.referrals,
                areas.uncategorised,
            )
        ):
            raise AdapterError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "NO_CLINICAL_AREAS",
                "RecordOptions selects no clinical area (set `all` or at least one area)",
            )
    if areas.medication_search_from:
        _check_search_from(areas, today or dt.datetime.now(dt.UTC).date())
    return areas


def _check_search_from(areas: Areas, today: dt.date) -> None:
    value = areas.medication_search_from
    # GP Connect 1.6: medicationSearchFromDate MUST be a whole date (no partial date, time or
    # offset) less than or equal to the current date.
    if not _WHOLE_DATE.match(value):
        raise _invalid("medication_search_from must be a whole date yyyy-mm-dd")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise _invalid("medication_search_from is not a valid date") from exc
    if parsed > today:
        raise _invalid("medication_search_from must not be in the future")
    # GP Connect 1.6 "Not permitted parameter combinations": with consultations or problems,
    # includeMedication.medicationSearchFromDate MUST NOT be sent (clinical risk of a partial
    # medication picture beside complete problems/consultations).
    if areas.consultations or areas.problems:
        raise _invalid(
            "medication_search_from cannot be combined with consultations or problems "
            "(GP Connect not-permitted parameter combination)"
        )


def build_parameters(nhs_number: str, areas: Areas) -> dict[str, Any]:
    """The FHIR STU3 Parameters resource for `$gpc.getstructuredrecord`."""
    params: list[dict[str, Any]] = [
        {
            "name": "patientNHSNumber",
            "valueIdentifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number},
        }
    ]
    if areas.allergies:
        # includeResolvedAllergies is 1..1 whenever includeAllergies is sent.
        params.append(
            {
                "name": "includeAllergies",
                "part": [
                    {"name": "includeResolvedAllergies", "valueBoolean": areas.resolved_allergies}
                ],
            }
        )
    if areas.medications:
        parts: list[dict[str, Any]] = [
            {"name": "includePrescriptionIssues", "valueBoolean": areas.prescription_issues}
        ]
        if areas.medication_search_from:
            parts.append(
                {"name": "medicationSearchFromDate", "valueDate": areas.medication_search_from}
            )
        params.append({"name": "includeMedication", "part": parts})
    # Areas without part parameters: a parameter with neither value nor part is legal here
    # (GP Connect 1.6, the `{"name": "includeProblems"}` note on the retrieve page).
    for wanted, name in (
        (areas.consultations, "includeConsultations"),
        (areas.problems, "includeProblems"),
        (areas.immunisations, "includeImmunisations"),
        (areas.uncategorised, "includeUncategorisedData"),
        (areas.investigations, "includeInvestigations"),
        (areas.referrals, "includeReferrals"),
        (areas.diary_entries, "includeDiaryEntries"),
    ):
        if wanted:
            params.append({"name": name})
    return {"resourceType": "Parameters", "parameter": params}


@dataclass
class RecordSummary:
    """What the adapter reports about a Bundle besides its bytes."""

    resource_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # The NHS number identifiers of every Patient entry, "" for a Patient without one: the
    # servicer's patient cross-check then sees an unidentified Patient instead of nothing.
    patient_nhs_numbers: list[str] = field(default_factory=list)


def _list_code(resource: dict[str, Any]) -> str:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return ""
    fallback = ""
    for coding in codings:
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            continue
        # Real captures carry codes with stray spaces (nhs-apis.md section 5).
        value = str(coding["code"]).strip()
        if coding.get("system") == SNOMED:
            return value
        fallback = fallback or value
    return fallback


def _list_warnings(resource: dict[str, Any]) -> list[str]:
    found: list[str] = []
    extensions = resource.get("extension")
    if not isinstance(extensions, list):
        return found
    for ext in extensions:
        if (
            isinstance(ext, dict)
            and ext.get("url") == LIST_WARNING_URL
            and isinstance(ext.get("valueCode"), str)
        ):
            found.append(ext["valueCode"].strip())
    return found


def _patient_nhs_numbers(resource: dict[str, Any]) -> list[str]:
    numbers: list[str] = []
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list):
        for ident in identifiers:
            if (
                isinstance(ident, dict)
                and ident.get("system") == NHS_NUMBER_SYSTEM
                and isinstance(ident.get("value"), str)
            ):
                numbers.append(ident["value"].replace(" ", ""))
    return numbers


def summarise(bundle: dict[str, Any]) -> RecordSummary:
    """Resource counts (entries plus contained resources) and List warnings, tolerant of junk.

    Real captures have Lists without ids, codes with spaces and odd entries (nhs-apis.md
    section 5): anything that is not a dict with a resourceType is skipped, never fatal.
    """
    counts: Counter[str] = Counter()
    warnings: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    patients: list[str] = []

    def visit(resource: dict[str, Any], depth: int) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return
        counts[rtype] += 1
        if rtype == "List":
            list_code = _list_code(resource)
            for code in _list_warnings(resource):
                if (list_code, code) not in seen:
                    seen.add((list_code, code))
                    warnings.append((list_code, code))
        elif rtype == "Patient" and depth == 0:
            patients.extend(_patient_nhs_numbers(resource) or [""])
        contained = resource.get("contained")
        if depth == 0 and isinstance(contained, list):
            for inner in contained:
                if isinstance(inner, dict):
                    visit(inner, depth + 1)

    entries = bundle.get("entry")
    if isinstance(entries, list):
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                visit(resource, 0)
    return RecordSummary(dict(counts), warnings, patients)


def parse_bundle(body: bytes) -> dict[str, Any]:
    """The response Bundle as a dict, or an AdapterError when the body is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(
            grpc.StatusCode.INTERNAL,
            "INVALID_PROVIDER_RESPONSE",
            "GP Connect answered 200 with a body that is not JSON",
        ) from exc
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        # Some providers answer errors with 200 + OperationOutcome: map it like any other.
        raise from_http(200, body, upstream="GP Connect")
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        rtype = doc.get("resourceType") if isinstance(doc, dict) else type(doc).__name__
        raise AdapterError(
            grpc.StatusCode.INTERNAL,
            "INVALID_PROVIDER_RESPONSE",
            f"GP Connect answered 200 with {str(rtype)[:40]!s}, not a Bundle",
        )
    return doc
