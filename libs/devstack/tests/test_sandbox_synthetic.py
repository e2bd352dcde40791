"""Synthetic GP Connect records: valid STU3 entry by entry, deterministic, sized, realistic."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from xcagw_devstack.sandbox import dmd
from xcagw_devstack.sandbox.panel import PANEL, get_patient
from xcagw_devstack.sandbox.synthetic import (
    BUNDLE_PROFILE,
    LIST_CODES,
    RecordRequest,
    generate_bundle,
    generate_bundle_for,
)

SIZES = [1, 2, 4, 5, 12, 24, 50, 100, 250, 1000, 3000, 10000]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")


def signature(node: Any) -> Any:
    """The structure of a JSON value: keys, JSON types and date formats, not the values.

    fhirclient's strict parse depends only on these (property names, types, cardinality and
    the date/dateTime formats it parses), so entries with equal signatures parse alike.
    """
    if isinstance(node, dict):
        return tuple(sorted((k, signature(v)) for k, v in node.items()))
    if isinstance(node, list):
        return ("[]", tuple(sorted({signature(v) for v in node}, key=repr)))
    if isinstance(node, str):
        return "date" if _DATE.match(node) else "dateTime" if _DATETIME.match(node) else "str"
    return type(node).__name__


def parse_entries(bundle: dict[str, Any]) -> int:
    """fhirclient 3.2.0 (STU3, strict) accepts every entry on its own.

    Each distinct entry structure is parsed once (large bundles repeat a few hundred shapes).
    Returns how many entries were parsed.
    """
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    assert bundle["meta"]["profile"] == [BUNDLE_PROFILE]
    seen: set[Any] = set()
    for i, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        sig = signature(resource)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            FHIRElementFactory.instantiate(resource["resourceType"], resource)
        except Exception as exc:  # noqa: BLE001 - report which entry failed
            pytest.fail(f"entry {i} ({resource['resourceType']}): {exc}")
    return len(seen)


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


@pytest.mark.parametrize("nhs", [p.nhs_number for p in PANEL])
def test_every_panel_bundle_parses_with_fhirclient(nhs: str) -> None:
    parse_entries(generate_bundle(nhs))


@pytest.mark.parametrize("size", SIZES)
def test_size_sweep(size: int) -> None:
    bundle = generate_bundle("9000000009", size=size, seed=size)
    n = len(bundle["entry"])
    if size <= 4:
        assert n == size
    else:
        assert abs(n - size) <= max(8, size * 0.1), n
    parse_entries(bundle)


def test_signature_tells_shapes_apart() -> None:
    a = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 1},
        "issued": "2020-01-01T10:00:00+00:00",
    }
    assert signature(a) == signature({**a, "issued": "2021-02-02T11:00:00+00:00"})
    assert signature(a) != signature({**a, "issued": "2021-02-02"})
    assert signature(a) != signature({**a, "valueQuantity": {"value": "1"}})
    assert signature(a) != signature({**a, "extra": []})


def test_deterministic_per_seed() -> None:
    a = json.dumps(generate_bundle("9000000009", seed=3))
    assert a == json.dumps(generate_bundle("9000000009", seed=3))
    assert a != json.dumps(generate_bundle("9000000009", seed=4))
    assert json.dumps(generate_bundle("9111231130")) == json.dumps(generate_bundle("9111231130"))


def test_made_up_patient_gets_demographics() -> None:
    bundle = generate_bundle("9111231130", size=200)
    (patient,) = resources(bundle, "Patient")
    assert patient["identifier"][0]["value"] == "9111231130"
    assert patient["name"][0]["family"]
    parse_entries(bundle)


def test_full_record_contents() -> None:
    bundle = generate_bundle("9000000009", size=600)
    kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    for rtype in (
        "Patient",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "AllergyIntolerance",
        "MedicationStatement",
        "MedicationRequest",
        "Medication",
        "Condition",
        "Immunization",
        "Observation",
        "DiagnosticReport",
        "Specimen",
        "Encounter",
        "ProcedureRequest",
        "ReferralRequest",
        "List",
        "Location",
    ):
        assert kinds[rtype] >= 1, rtype
    list_codes = {r["code"]["coding"][0]["code"] for r in resources(bundle, "List")}
    assert {code for code, _, _ in LIST_CODES.values()} <= list_codes
    assert {"325851000000107", "25851000000105", "24781000000107"} <= list_codes

    intents = Counter(r["intent"] for r in resources(bundle, "MedicationRequest"))
    assert intents["plan"] >= 1 and intents["order"] >= 1
    for med in resources(bundle, "Medication"):
        assert med["code"]["coding"][0]["code"] in dmd.CONCEPTS
    for cond in resources(bundle, "Condition"):
        assert cond["meta"]["profile"][0].endswith("CareConnect-GPC-ProblemHeader-Condition-1")
        urls = {e["url"].rsplit("/", 1)[1] for e in cond["extension"]}
        assert {
            "Extension-CareConnect-GPC-ActualProblem-1",
            "Extension-CareConnect-ProblemSignificance-1",
        } <= urls
    bp = [
        o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "163020007"
    ]
    assert bp and all(len(o["component"]) == 2 for o in bp)
    groups = [
        o
        for o in resources(bundle, "Observation")
        if any(r["type"] == "has-member" for r in o.get("related", []))
    ]
    assert groups
    diary = [r for r in resources(bundle, "ProcedureRequest") if r["intent"] == "plan"]
    assert diary
    ended = next(
        r for r in resources(bundle, "List") if r["code"]["coding"][0]["code"] == "1103671000000101"
    )
    assert all(c["clinicalStatus"] == "resolved" for c in ended.get("contained", []))


def test_real_data_quirks() -> None:
    bundle = generate_bundle("9000000009", size=400)
    assert all(set(e) == {"resource"} for e in bundle["entry"]), "no fullUrl"
    assert any("id" not in r for r in resources(bundle, "List")), "Lists without id"
    present = {
        f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in bundle["entry"]
    }
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and "/" in ref and not ref.startswith("#"):
                refs.add(ref)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bundle)
    assert refs - present, "some references must dangle"
    dangling_types = {r.split("/")[0] for r in refs - present}
    assert "Practitioner" in dangling_types


def test_allergy_assertions_across_the_panel() -> None:
    codes = Counter()
    for p in PANEL:
        for a in resources(generate_bundle(p.nhs_number), "AllergyIntolerance"):
            codes[a["code"]["coding"][0]["code"]] += 1
    assert codes["716186003"] >= 1, "some patient has the 'no known allergy' assertion"
    assert sum(codes.values()) > codes["716186003"]


def test_warnings_empty_reason_and_deceased() -> None:
    warned = generate_bundle("9000000017")
    for lst in resources(warned, "List"):
        if "id" in lst or lst["code"]["coding"][0]["system"] != "http://snomed.info/sct":
            continue
        assert {e.get("valueCode") for e in lst["extension"]} >= {
            "confidential-items",
            "data-in-transit",
        }
    empty = generate_bundle("9000000033")
    for lst in resources(empty, "List"):
        assert lst["emptyReason"]["coding"][0]["code"] == "no-content-recorded"
    deceased = generate_bundle("9000000084")
    assert resources(deceased, "Patient")[0]["deceasedDateTime"].startswith("2023-11-02")


def test_request_filters() -> None:
    patient = get_patient("9000000009")
    assert patient is not None
    nothing = generate_bundle_for(patient, request=RecordRequest.none())
    assert not resources(nothing, "List")
    only_meds = generate_bundle_for(
        patient,
        request=replace(RecordRequest.none(), medication=True, include_prescription_issues=False),
    )
    assert {r["code"]["coding"][0]["code"] for r in resources(only_meds, "List")} == {
        "933361000000108"
    }
    assert all(r["intent"] == "plan" for r in resources(only_meds, "MedicationRequest"))


def test_snomed_codes_have_valid_check_digits() -> None:
    bundle = generate_bundle("9000000009", size=2000)
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("system") == "http://snomed.info/sct" and isinstance(node.get("code"), str):
                codes.add(node["code"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bundle)
    bad = sorted(c for c in codes if not dmd.sctid_is_valid(c))
    assert not bad
    assert len(codes) > 60
