"""Unit tests of the pure parts: NHS number check, FHIR mapping, search parameters, error table."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import pytest

from pds_adapter import errors, mapping, servicer
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw_common.nhs_number import is_valid_nhs_number, normalise_nhs_number
from xcagw_common.testing import shared_dir

PDS_DIR = shared_dir() / "nhs" / "pds"


def load(relative: str) -> dict[str, Any]:
    path = PDS_DIR / relative
    if not path.exists():
        pytest.skip(f"reference kit not present: {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# ---------------------------------------------------------------------------- NHS number


@pytest.mark.parametrize(
    "value",
    ["9000000009", "9000000017", "9000000025", "9000000033", "9111231130", "9690937278",
     "9999999999", "943 476 5919"],
)  # fmt: skip
def test_valid_nhs_numbers(value: str) -> None:
    assert is_valid_nhs_number(value)
    assert normalise_nhs_number(value) == value.replace(" ", "")


@pytest.mark.parametrize(
    "value",
    ["9000000000", "9000000001", "9432003812", "900000000", "90000000090", "", "abcdefghij",
     "900000000９", "9000-00000", "1000000010"],
)  # fmt: skip
def test_invalid_nhs_numbers(value: str) -> None:
    # 1000000010: check digit computes to 10, which is never valid.
    assert not is_valid_nhs_number(value)
    assert normalise_nhs_number(value) is None


# ---------------------------------------------------------------------------- Patient mapping


def test_full_patient_maps_every_field() -> None:
    resource = load("spec-examples/Patient.json")
    patient = mapping.patient_from_fhir(resource, requested_nhs_number="9000000009")
    assert patient.nhs_number == "9000000009"
    assert patient.superseded_from == ""
    n = patient.names[0]
    names = [(n.use, n.family, list(n.given), list(n.prefix), list(n.suffix))]
    assert len(patient.names) == 1
    assert names == [("usual", "Smith", ["Jane"], ["Mrs"], ["MBE"])]
    assert patient.gender == "female"
    assert patient.birth_date == "2010-10-22"
    assert patient.deceased_date_time == "2010-10-22T00:00:00+00:00"
    assert patient.security_label == "U" and not patient.restricted
    assert patient.verification_status == "01"
    assert patient.version_id == "2"
    assert patient.gp_ods_code == "Y12345"
    assert [(a.use, a.postal_code) for a in patient.addresses] == [
        ("home", "LS1 6AE"),
        ("temp", "LS1 6AE"),
    ]
    assert list(patient.addresses[0].line) == [
        "1 Trevelyan Square", "Boar Lane", "City Centre", "Leeds", "West Yorkshire",
    ]  # fmt: skip
    assert [(t.system, t.value, t.use) for t in patient.telecoms] == [
        ("phone", "01632960587", "home"),
        ("email", "jane.smith@example.com", "home"),
        ("other", "01632960587", "home"),
    ]


def test_superseded_number_is_reported() -> None:
    resource = load("spec-examples/Patient.json")
    patient = mapping.patient_from_fhir(resource, requested_nhs_number="9000000041")
    assert patient.nhs_number == "9000000009"
    assert patient.superseded_from == "9000000041"


def test_restricted_patient_never_gets_location_fields() -> None:
    resource = load("spec-examples/Sensitive_Patient.json")
    patient = mapping.patient_from_fhir(resource)
    assert patient.restricted and patient.security_label == "R"
    assert not patient.addresses and not patient.telecoms and patient.gp_ods_code == ""
    # Even if a payload wrongly carried them, the normalised message stays empty.
    leaky = dict(load("spec-examples/Patient.json"))
    leaky["meta"] = {"security": [{"system": mapping.CONFIDENTIALITY_SYSTEM, "code": "V"}]}
    patient = mapping.patient_from_fhir(leaky)
    assert patient.restricted and patient.security_label == "V"
    assert not patient.addresses and not patient.telecoms and patient.gp_ods_code == ""


@pytest.mark.parametrize(
    ("labels", "expected", "restricted"),
    [
        (["U"], "U", False),
        (["R"], "R", True),
        (["S"], "S", True),
        (["U", "V"], "V", True),
        (["R", "REDACTED"], "REDACTED", True),
        ([], "", True),  # fail closed: no label is not "unrestricted"
        (["N"], "N", True),
    ],
)
def test_security_labels(labels: list[str], expected: str, restricted: bool) -> None:
    resource = {
        "resourceType": "Patient",
        "id": "9000000009",
        "meta": {
            "security": [{"system": mapping.CONFIDENTIALITY_SYSTEM, "code": c} for c in labels]
        },
    }
    patient = mapping.patient_from_fhir(resource)
    assert patient.security_label == expected
    assert patient.restricted is restricted


def test_minimal_and_odd_payloads_are_tolerated() -> None:
    odd = {
        "resourceType": "Patient",
        "id": "9000000033",
        "name": ["not a dict", {"family": 42, "given": ["A", None, 3]}],
        "address": {"not": "a list"},
        "telecom": [None],
        "generalPractitioner": [{"identifier": "nope"}, {"identifier": {"value": " B82617 "}}],
        "meta": {"security": [{"code": "U"}]},
        "identifier": [{"system": "other", "value": "x"}, {"system": mapping.NHS_NUMBER_SYSTEM}],
    }
    patient = mapping.patient_from_fhir(odd)
    assert [(n.family, list(n.given)) for n in patient.names] == [("", ["A"])]
    assert not patient.addresses and not patient.telecoms
    assert patient.gp_ods_code == "B82617"
    assert patient.verification_status == ""


def test_not_a_patient_is_rejected() -> None:
    with pytest.raises(mapping.FhirShapeError):
        mapping.patient_from_fhir({"resourceType": "OperationOutcome"})
    with pytest.raises(mapping.FhirShapeError):
        mapping.patient_from_fhir({"resourceType": "Patient"})
    with pytest.raises(mapping.FhirShapeError):
        mapping.parse_json_object("[1, 2]")
    with pytest.raises(mapping.FhirShapeError):
        mapping.parse_json_object("<html>")


def test_search_bundle_maps_patients_and_scores() -> None:
    results = mapping.patients_from_bundle(load("spec-examples/PatientSearch.json"))
    assert [(p.nhs_number, s) for p, s in results] == [("9000000009", 0.75)]
    restricted = mapping.patients_from_bundle(load("spec-examples/Sensitive_PatientSearch.json"))
    assert restricted[0][0].restricted and not restricted[0][0].addresses
    assert mapping.patients_from_bundle({"resourceType": "Bundle", "type": "searchset"}) == []
    with pytest.raises(mapping.FhirShapeError):
        mapping.patients_from_bundle({"resourceType": "OperationOutcome"})


def test_too_many_matches_is_recognised() -> None:
    assert mapping.is_too_many_matches(load("karate-stubs/search/TOO_MANY_MATCHES.json"))
    assert mapping.is_too_many_matches(load("errors/functional-tests/too_many_matches.json"))
    assert not mapping.is_too_many_matches(load("errors/karate-stubs/RESOURCE_NOT_FOUND.json"))
    assert not mapping.is_too_many_matches(load("spec-examples/PatientSearch.json"))


# ---------------------------------------------------------------------------- every real example


def _expected_fields(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the issue lists, read straight from the JSON (independently of mapping.py)."""
    security = resource.get("meta", {}).get("security", [])
    label = security[0]["code"] if security else ""
    nhs_ids = [
        i for i in resource.get("identifier", []) if i.get("system") == mapping.NHS_NUMBER_SYSTEM
    ]
    verification = ""
    for ext in nhs_ids[0].get("extension", []) if nhs_ids else []:
        verification = ext["valueCodeableConcept"]["coding"][0]["code"]
    restricted = label != "U"
    gps = resource.get("generalPractitioner", [])
    return {
        "nhs_number": resource["id"],
        "names": [
            (n.get("use", ""), n.get("family", ""), n.get("given", []), n.get("prefix", []),
             n.get("suffix", []))
            for n in resource.get("name", [])
        ],
        "gender": resource.get("gender", ""),
        "birth_date": resource.get("birthDate", ""),
        "deceased": resource.get("deceasedDateTime", ""),
        "addresses": [] if restricted else [
            (a.get("use", ""), a.get("line", []), a.get("city", ""), a.get("district", ""),
             a.get("postalCode", ""), a.get("country", ""))
            for a in resource.get("address", [])
        ],
        "telecoms": [] if restricted else [
            (t.get("system", ""), t.get("value", ""), t.get("use", ""))
            for t in resource.get("telecom", [])
        ],
        "gp": "" if restricted or not gps else gps[0]["identifier"]["value"],
        "label": label,
        "restricted": restricted,
        "verification": verification,
        "version": resource.get("meta", {}).get("versionId", ""),
    }  # fmt: skip


def _actual_fields(patient: pds_adapter_pb2.Patient) -> dict[str, Any]:
    return {
        "nhs_number": patient.nhs_number,
        "names": [
            (n.use, n.family, list(n.given), list(n.prefix), list(n.suffix)) for n in patient.names
        ],
        "gender": patient.gender,
        "birth_date": patient.birth_date,
        "deceased": patient.deceased_date_time,
        "addresses": [
            (a.use, list(a.line), a.city, a.district, a.postal_code, a.country)
            for a in patient.addresses
        ],
        "telecoms": [(t.system, t.value, t.use) for t in patient.telecoms],
        "gp": patient.gp_ods_code,
        "label": patient.security_label,
        "restricted": patient.restricted,
        "verification": patient.verification_status,
        "version": patient.version_id,
    }


def _example_patients() -> Iterator[tuple[str, Mapping[str, Any]]]:
    for path in sorted(PDS_DIR.rglob("*.json")):
        document = json.loads(path.read_text())
        for index, resource in enumerate(mapping.iter_patient_resources(document)):
            yield f"{path.relative_to(PDS_DIR)}#{index}", resource


def test_every_real_pds_example_patient_maps_without_loss() -> None:
    if not PDS_DIR.is_dir():
        pytest.skip(f"reference kit not present: {PDS_DIR}")
    examples = list(_example_patients())
    assert len(examples) > 40  # patients, search entries, INT captures
    restricted_seen = deceased_seen = 0
    for name, resource in examples:
        patient = mapping.patient_from_fhir(resource, requested_nhs_number=resource["id"])
        assert _actual_fields(patient) == _expected_fields(resource), name
        assert patient.superseded_from == ""
        restricted_seen += patient.restricted
        deceased_seen += bool(patient.deceased_date_time)
        # The wire form round-trips too.
        assert pds_adapter_pb2.Patient.FromString(patient.SerializeToString()) == patient
    assert restricted_seen and deceased_seen


# ---------------------------------------------------------------------------- search parameters


def search(**fields: Any) -> pds_adapter_pb2.SearchPatientsRequest:
    return pds_adapter_pb2.SearchPatientsRequest(**fields)


def test_search_params_exact_date_and_options() -> None:
    request = search(
        family="Smith", given=["Jane", "Ann"], gender="Female", birth_date_from="2010-10-22",
        birth_date_to="2010-10-22", postal_code="LS1 6AE", history=True, exact=True,
    )  # fmt: skip
    assert mapping.search_params(request) == [
        ("family", "Smith"),
        ("given", "Jane"),
        ("given", "Ann"),
        ("gender", "female"),
        ("birthdate", "eq2010-10-22"),
        ("address-postalcode", "LS1 6AE"),
        ("_exact-match", "true"),
        ("_history", "true"),
        ("_max-results", "1"),
    ]


def test_search_params_date_ranges_and_fuzzy() -> None:
    params = mapping.search_params(
        search(given=["Jane"], family="Smith", birth_date_from="2000-01-01",
               birth_date_to="2000-12-31", fuzzy=True)
    )  # fmt: skip
    assert ("birthdate", "ge2000-01-01") in params and ("birthdate", "le2000-12-31") in params
    assert ("_fuzzy-match", "true") in params
    only_to = mapping.search_params(search(family="Smith", birth_date_to="2000-12-31"))
    assert ("birthdate", "le2000-12-31") in only_to
    only_from = mapping.search_params(search(family="Sm*th", birth_date_from="2000-01-01"))
    assert ("birthdate", "ge2000-01-01") in only_from


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"family": "Smith"}, "birth date"),
        ({"birth_date_from": "2000-01-01"}, "family or given"),
        ({"family": "Smith", "birth_date_from": "01/02/2000"}, "yyyy-mm-dd"),
        ({"family": "Smith", "birth_date_from": "2010-13-45"}, "real date"),
        ({"family": "Smith", "birth_date_from": "2001-01-01", "birth_date_to": "2000-01-01"},
         "after"),
        ({"family": "Smith", "birth_date_from": "2000-01-01", "gender": "f"}, "gender"),
        ({"family": "S" * 36, "birth_date_from": "2000-01-01"}, "35"),
        ({"family": "S*ith", "birth_date_from": "2000-01-01"}, "first 2"),
        ({"family": "Smi*", "birth_date_from": "2000-01-01", "fuzzy": True}, "fuzzy"),
        ({"family": "Smith\n", "birth_date_from": "2000-01-01"}, "control"),
    ],
)  # fmt: skip
def test_search_params_rejects_what_pds_would(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(mapping.SearchValidationError, match=message):
        mapping.search_params(search(**fields))


# ---------------------------------------------------------------------------- error mapping


def _docstring_table() -> dict[str, tuple[str, str]]:
    """Spine code -> (gRPC code, reason) rows of the servicer's documented table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (servicer.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[A-Z_]+", cells[0].split(" ")[0]):
            code = cells[0].split(" ")[0]
            if cells[1] not in ("401",):  # ACCESS_DENIED is listed for 401 and 403
                rows[code] = (cells[2], cells[3])
    return rows


def test_every_spine_code_rule_is_documented_in_the_servicer() -> None:
    documented = _docstring_table()
    for code, rule in errors.SPINE_CODE_RULES.items():
        assert documented.get(code) == (rule.code.name, rule.reason), code


@pytest.mark.parametrize(
    ("relative", "status", "code", "reason"),
    [
        ("errors/karate-stubs/RESOURCE_NOT_FOUND.json", 404, "NOT_FOUND", "PATIENT_NOT_FOUND"),
        ("errors/karate-stubs/INVALIDATED_RESOURCE.json", 404, "NOT_FOUND", "INVALIDATED_RESOURCE"),
        ("errors/karate-stubs/INVALID_RESOURCE_ID.json", 400, "INVALID_ARGUMENT",
         "INVALID_NHS_NUMBER"),
        ("errors/karate-stubs/INVALID_SEARCH_DATA.json", 400, "INVALID_ARGUMENT",
         "INVALID_SEARCH_DATA"),
        ("errors/karate-stubs/ACCESS_DENIED.json", 403, "PERMISSION_DENIED", "ACCESS_DENIED"),
        ("errors/functional-tests/invalid_access_token.json", 401, "UNAUTHENTICATED",
         "ACCESS_DENIED"),
        ("errors/functional-tests/missing_x-request_id.json", 400, "INVALID_ARGUMENT",
         "MISSING_VALUE"),
        ("karate-stubs/search/TOO_MANY_MATCHES.json", 200, "FAILED_PRECONDITION",
         "TOO_MANY_MATCHES"),
        ("errors/karate-stubs/NOT_SUPPORTED_SEARCH.json", 400, "INVALID_ARGUMENT",
         "PDS_BAD_REQUEST"),
    ],
)  # fmt: skip
def test_real_operation_outcomes_map_to_documented_statuses(
    relative: str, status: int, code: str, reason: str
) -> None:
    error = errors.error_from_response(status, load(relative))
    assert (error.code.name, error.reason) == (code, reason)
    assert error.metadata["http_status"] == str(status)


def test_status_decides_for_gateway_answers() -> None:
    for status, code, reason in [
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"),
        (408, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (503, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (500, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (418, grpc.StatusCode.INTERNAL, "UPSTREAM_ERROR"),
    ]:
        error = errors.error_from_response(status, None)
        assert (error.code, error.reason) == (code, reason)


def test_error_messages_never_carry_nhs_numbers() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "value",
                "details": {
                    "coding": [
                        {"system": mapping.SPINE_ERROR_SYSTEM, "code": "INVALID_RESOURCE_ID",
                         "display": "Resource Id is invalid"}
                    ]
                },
                "diagnostics": "Invalid resource id 900 000 0001 and 9000000009",
            }
        ],
    }  # fmt: skip
    error = errors.error_from_response(400, outcome)
    assert "900" not in error.message
    assert "Resource Id is invalid" in error.message
    assert error.metadata["pds_code"] == "INVALID_RESOURCE_ID"


def test_diagnostics_lose_quoted_values_but_keep_field_names() -> None:
    text = mapping.scrub_diagnostics(
        "Invalid value - 'Smith' in field 'family'; Invalid value - '1234' in header 'X-Request-ID'"
    )
    assert "Smith" not in text and "1234" not in text
    assert "'family'" in text and "'X-Request-ID'" in text
