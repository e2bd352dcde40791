"""Parameters body (GP Connect 1.6 rules) and the Bundle summary."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc
import pytest

from gpconnect_adapter.outcomes import AdapterError
from gpconnect_adapter.record import (
    LIST_WARNING_URL,
    build_parameters,
    parse_bundle,
    resolve_areas,
    summarise,
)
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2
from xcagw_common.testing import shared_dir

TODAY = dt.date(2024, 6, 1)


def _names(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in params["parameter"]}


def test_gpc_all_requests_every_clinical_area() -> None:
    areas = resolve_areas(gpconnect_adapter_pb2.RecordOptions(all=True), TODAY)
    params = _names(build_parameters("9000000009", areas))
    assert params["patientNHSNumber"]["valueIdentifier"] == {
        "system": "https://fhir.nhs.uk/Id/nhs-number",
        "value": "9000000009",
    }
    assert params["includeAllergies"]["part"] == [
        {"name": "includeResolvedAllergies", "valueBoolean": True}
    ]
    assert params["includeMedication"]["part"] == [
        {"name": "includePrescriptionIssues", "valueBoolean": True}
    ]
    for name in (
        "includeProblems",
        "includeImmunisations",
        "includeConsultations",
        "includeInvestigations",
        "includeReferrals",
        "includeUncategorisedData",
        "includeDiaryEntries",
    ):
        # No part parameters: none of the forbidden-with-consultations parts is ever sent.
        assert params[name] == {"name": name}


def test_gpc_missing_options_mean_the_whole_record() -> None:
    assert resolve_areas(None, TODAY) == resolve_areas(
        gpconnect_adapter_pb2.RecordOptions(all=True), TODAY
    )


def test_gpc_each_area_is_switchable() -> None:
    options = gpconnect_adapter_pb2.RecordOptions(
        medications=True, prescription_issues=False, medication_search_from="2020-02-01"
    )
    params = _names(build_parameters("9000000009", resolve_areas(options, TODAY)))
    assert set(params) == {"patientNHSNumber", "includeMedication"}
    assert params["includeMedication"]["part"] == [
        {"name": "includePrescriptionIssues", "valueBoolean": False},
        {"name": "medicationSearchFromDate", "valueDate": "2020-02-01"},
    ]
    options = gpconnect_adapter_pb2.RecordOptions(allergies=True, immunisations=True)
    params = _names(build_parameters("9000000009", resolve_areas(options, TODAY)))
    assert set(params) == {"patientNHSNumber", "includeAllergies", "includeImmunisations"}
    assert params["includeAllergies"]["part"][0]["valueBoolean"] is False


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (gpconnect_adapter_pb2.RecordOptions(), "NO_CLINICAL_AREAS"),
        (gpconnect_adapter_pb2.RecordOptions(resolved_allergies=True), "INVALID_PARAMETER"),
        (gpconnect_adapter_pb2.RecordOptions(prescription_issues=True), "INVALID_PARAMETER"),
        (
            gpconnect_adapter_pb2.RecordOptions(medications=True, medication_search_from="2020-2"),
            "INVALID_PARAMETER",
        ),
        (
            gpconnect_adapter_pb2.RecordOptions(
                medications=True, medication_search_from="2020-02-30"
            ),
            "INVALID_PARAMETER",
        ),
        (
            gpconnect_adapter_pb2.RecordOptions(
                medications=True, medication_search_from="2024-06-02"
            ),
            "INVALID_PARAMETER",
        ),
        # GP Connect 1.6 "Not permitted parameter combinations".
        (
            gpconnect_adapter_pb2.RecordOptions(
                medications=True, problems=True, medication_search_from="2020-01-01"
            ),
            "INVALID_PARAMETER",
        ),
        (
            gpconnect_adapter_pb2.RecordOptions(all=True, medication_search_from="2020-01-01"),
            "INVALID_PARAMETER",
        ),
    ],
)
def test_gpc_invalid_options_are_refused_before_any_call(
    options: gpconnect_adapter_pb2.RecordOptions, reason: str
) -> None:
    with pytest.raises(AdapterError) as info:
        resolve_areas(options, TODAY)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.reason == reason


def _list(code: str, warnings: list[str], contained: list[dict[str, Any]] | None = None) -> Any:
    resource: dict[str, Any] = {
        "resourceType": "List",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": f"{code} "}]},
        "extension": [{"url": LIST_WARNING_URL, "valueCode": w} for w in warnings],
    }
    if contained:
        resource["contained"] = contained
    return {"resource": resource}


def test_gpc_summary_counts_contained_resources_and_warnings() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "identifier": []}},
            _list("886921000000105", ["confidential-items"]),
            _list(
                "1103671000000101",
                ["confidential-items", "data-in-transit"],
                [{"resourceType": "AllergyIntolerance"}, {"resourceType": "AllergyIntolerance"}],
            ),
            {"resource": {"resourceType": "AllergyIntolerance"}},
            {"fhir_comments": ["junk entry without a resource"]},
            "not even an object",
        ],
    }
    summary = summarise(bundle)
    assert summary.resource_counts == {"Patient": 1, "List": 2, "AllergyIntolerance": 3}
    assert summary.warnings == [
        ("886921000000105", "confidential-items"),
        ("1103671000000101", "confidential-items"),
        ("1103671000000101", "data-in-transit"),
    ]


def test_gpc_summary_of_real_captures_finds_their_warnings() -> None:
    path = shared_dir() / "xhuma-fixtures" / "bundles" / "9690938118.json"
    if not path.exists():
        pytest.skip(f"reference kit not found at {path} (set XCAGW_SHARED_DIR)")
    summary = summarise(json.loads(path.read_bytes()))
    codes = {code for _, code in summary.warnings}
    assert {"confidential-items", "data-in-transit"} <= codes
    assert summary.resource_counts["Patient"] == 1
    assert summary.patient_nhs_numbers == ["9690938118"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "INVALID_PROVIDER_RESPONSE"),
        (b'{"resourceType": "Patient"}', "INVALID_PROVIDER_RESPONSE"),
        (b"[1, 2]", "INVALID_PROVIDER_RESPONSE"),
    ],
)
def test_gpc_a_200_that_is_not_a_bundle_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(AdapterError) as info:
        parse_bundle(body)
    assert info.value.reason == reason
