"""Record details that used to be lost between GP Connect and the CCD: reference range units,
medication quantity, prescription type and authorisation expiry, patient language and contacts,
and results shared between two reports. Real captures (../shared, skipped when absent) and
hand-made or synthetic bundles (always run)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from ccda_testkit import NS, WHEN, cc, ccd, observation, org, patient, section
from ccda_testkit import bundle as make_bundle
from lxml import etree

from ccda_converter.codes import concept
from ccda_converter.convert import ConvertOptions, convert_bundle

SD = "https://fhir.nhs.uk/STU3/StructureDefinition/"
CS = "https://fhir.nhs.uk/STU3/CodeSystem/"
UCUM = "http://unitsofmeasure.org"


def to_xml(bundle: dict[str, Any]) -> etree._Element:
    return ccd(bundle)[0]


def cells(root: etree._Element, ref: str) -> list[str]:
    """The texts of the narrative row (or cell) a reference points to, one per cell."""
    (el,) = root.xpath(f"//*[@ID='{ref.removeprefix('#')}']", namespaces=NS)
    if el.tag.endswith("}td"):
        return [" | ".join(el.itertext())]
    return [" | ".join(td.itertext()) for td in el]


def entry_row(root: etree._Element, el: etree._Element) -> list[str]:
    return cells(root, el.find("cda:text/cda:reference", NS).get("value"))


def fixture(kit: Any, *parts: str) -> dict[str, Any]:
    path = Path(kit.shared_dir(), *parts)
    if not path.exists():
        pytest.skip(f"{path} not found (set XCAGW_SHARED_DIR)")
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def xhuma(kit: Any, nhs: str) -> dict[str, Any]:
    return fixture(kit, "xhuma-fixtures", "bundles", f"{nhs}.json")


def one_medication(bundle: dict[str, Any], plan_id: str) -> dict[str, Any]:
    """The bundle with only the medication built on ``plan_id`` (its plan, statements and
    issues); every other resource is kept."""
    keep = {plan_id}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if any(plan_id in b.get("reference", "") for b in res.get("basedOn", [])):
            keep.add(res.get("id", ""))
    out = copy.deepcopy(bundle)
    out["entry"] = [
        e
        for e in out["entry"]
        if e["resource"]["resourceType"] not in ("MedicationRequest", "MedicationStatement")
        or e["resource"].get("id") in keep
    ]
    return out


def result_observation(root: etree._Element, name: str) -> etree._Element:
    """The Result Observation whose narrative row is named ``name``."""
    for obs in root.xpath(
        "//cda:section[cda:code/@code='30954-2']//cda:organizer/cda:component/cda:observation",
        namespaces=NS,
    ):
        if entry_row(root, obs)[0].strip() == name:
            return obs
    raise AssertionError(f"no result observation {name!r}")


def range_units(obs: etree._Element) -> list[str | None]:
    return [
        b.get("unit")
        for b in obs.xpath("cda:referenceRange/cda:observationRange/cda:value/*", namespaces=NS)
    ]


# ---- 1. reference ranges keep the value's unit ---------------------------------------------


def test_range_without_unit_takes_the_value_unit_in_real_pathology(kit: Any) -> None:
    root = to_xml(fixture(kit, "nhs", "gpconnect", "spec-examples", "pathology_response2.json"))
    psa = result_observation(root, "Prostate specific antigen level")
    assert (psa.find("cda:value", NS).get("value"), psa.find("cda:value", NS).get("unit")) == (
        "5.9",
        "ug/L",
    )
    assert range_units(psa) == ["ug/L", "ug/L"]
    assert entry_row(root, psa)[2] == "0 ug/L - 4 ug/L"

    root = to_xml(xhuma(kit, "9692136744"))
    b12 = result_observation(root, "Serum vitamin B12 level")
    assert range_units(b12) == ["ng/L", "ng/L"]
    tsh = result_observation(root, "Serum TSH level")
    assert tsh.find("cda:value", NS).get("unit") == range_units(tsh)[0] == "m[IU]/L"
    # No bound anywhere in the record is left as a pure number beside a value with a unit.
    for obs in root.xpath("//cda:observation[cda:referenceRange]", namespaces=NS):
        value_unit = obs.find("cda:value", NS).get("unit")
        if value_unit and value_unit != "1":
            assert "1" not in range_units(obs), entry_row(root, obs)


def test_range_without_unit_takes_the_value_unit_in_synthetic_pathology(kit: Any) -> None:
    if not kit.synthetic_available():
        pytest.skip("synthetic generator xcagw_devstack.sandbox.synthetic is not installed")
    bundle = kit.synthetic_bundle("9000000009", 300)
    stripped = 0
    for entry in bundle["entry"]:
        for rr in entry["resource"].get("referenceRange", []):
            for bound in ("low", "high"):
                if isinstance(rr.get(bound), dict):
                    rr[bound] = {"value": rr[bound]["value"]}
                    stripped += 1
    assert stripped > 10
    root = to_xml(bundle)
    checked = 0
    for obs in root.xpath("//cda:observation[cda:referenceRange]", namespaces=NS):
        value = obs.find("cda:value", NS)
        if value.get(f"{{{NS['xsi']}}}type") == "PQ" and value.get("unit"):
            assert set(range_units(obs)) == {value.get("unit")}
            checked += 1
    assert checked > 10


def test_range_unit_from_value_range_and_own_unit_kept() -> None:
    obs = observation(
        "x",
        cc("1000731000000107", "Serum creatinine level"),
        valueQuantity={"value": 80, "unit": "umol/L", "system": UCUM, "code": "umol/L"},
        referenceRange=[
            {"low": {"value": 60}, "high": {"value": 0.12, "unit": "mmol/L"}},
        ],
    )
    span = observation(
        "y",
        cc("1022431000000105", "Haemoglobin"),
        valueRange={"low": {"value": 120, "unit": "g/L"}, "high": {"value": 130}},
        referenceRange=[{"low": {"value": 115}}],
    )
    root = to_xml(make_bundle(obs, span))
    creat = result_observation(root, "Serum creatinine level")
    assert range_units(creat) == ["umol/L", "mmol/L"]
    assert range_units(result_observation(root, "Haemoglobin")) == ["g/L"]


# ---- 2-4. medications: quantity, prescription type, authorisation expiry -------------------


def _plan(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "intent": "plan",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2024-04-26",
        "dispenseRequest": {"validityPeriod": {"start": "2024-04-26"}},
        **extra,
    }


def _med() -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": "m1",
        "code": cc("39720311000001101", "Paracetamol 500mg tablets"),
    }


def _quantity(value: Any, text: str) -> dict[str, Any]:
    return {
        "value": value,
        "extension": [
            {"url": SD + "Extension-CareConnect-GPC-MedicationQuantityText-1", "valueString": text}
        ],
    }


def _activities(root: etree._Element) -> list[etree._Element]:
    sec = section(root, "10160-0")
    acts: list[etree._Element] = sec.xpath("cda:entry/cda:substanceAdministration", namespaces=NS)
    return acts


@pytest.mark.parametrize(
    ("value", "text", "shown", "unit"),
    [
        (28, "tablet", "28 tablet", None),
        (28, "28 tablets", "28 tablets", None),
        (250, "ml", "250 ml", "mL"),
        (14, "28 tablet", "14 (28 tablet)", "1"),
    ],
)
def test_quantity_text_keeps_the_number(
    value: int, text: str, shown: str, unit: str | None
) -> None:
    plan = _plan()
    plan["dispenseRequest"]["quantity"] = _quantity(value, text)
    root = to_xml(make_bundle(_med(), plan))
    (act,) = _activities(root)
    assert entry_row(root, act)[2] == shown
    qty = act.find("cda:entryRelationship/cda:supply/cda:quantity", NS)
    assert (qty.get("value"), qty.get("unit")) == (str(value), unit)


def test_quantity_number_in_real_record(kit: Any) -> None:
    bundle = one_medication(xhuma(kit, "9692136744"), "9000000000000000_12ef000000000000_plan")
    root = to_xml(bundle)
    (act,) = _activities(root)
    assert entry_row(root, act)[2] == "7 tablet"


def test_prescription_type_acute_shown_in_real_record(kit: Any) -> None:
    bundle = one_medication(xhuma(kit, "9690937472"), "E01E5A37-972A-4911-B3A8-873E68978084")
    root = to_xml(bundle)
    (act,) = _activities(root)
    row = entry_row(root, act)
    assert row[7] == "Acute, Prescribed at GP practice"
    # The authorisation's supply order points at the narrative that names its type.
    (supply,) = act.xpath("cda:entryRelationship/cda:supply", namespaces=NS)
    assert cells(root, supply.find("cda:text/cda:reference", NS).get("value")) == ["Acute"]


def test_coding_display_from_a_system_without_oid_is_the_text() -> None:
    repeat = cc("repeat-dispensing", "Repeat dispensing", CS + "CareConnect-PrescriptionType-1")
    assert concept(repeat).text == "Repeat dispensing"
    # A known system's display still comes first, an explicit text before both.
    both = {"coding": [*repeat["coding"], *cc("1", "One")["coding"]]}
    assert concept(both).text == "One"
    assert concept({**both, "text": "Given text"}).text == "Given text"


def test_authorisation_expiry_in_real_record(kit: Any) -> None:
    bundle = one_medication(xhuma(kit, "9692136744"), "9000000000000000_12ef000000000000_plan")
    root = to_xml(bundle)
    (act,) = _activities(root)
    row = entry_row(root, act)
    assert row[3] == "Repeat dispensing | 3 of 3 issued | authorised until 2024-10-26"
    assert row[7] == "Repeat dispensing, Prescribed at GP practice"
    supplies = act.xpath("cda:entryRelationship/cda:supply", namespaces=NS)
    plan_supply = supplies[0]
    assert plan_supply.find("cda:repeatNumber", NS).get("value") == "3"
    time = plan_supply.find("cda:effectiveTime", NS)
    assert (time.find("cda:low", NS).get("value"), time.find("cda:high", NS).get("value")) == (
        "20240426",
        "20241026",
    )
    assert cells(root, plan_supply.find("cda:text/cda:reference", NS).get("value")) == [row[3]]
    # Issues carry their own validity, not the authorisation's expiry.
    assert all(s.find("cda:text", NS) is None for s in supplies[1:])


def _repeat_info(expiry: str) -> dict[str, Any]:
    return {
        "url": SD + "Extension-CareConnect-GPC-MedicationRepeatInformation-1",
        "extension": [
            {"url": "numberOfRepeatPrescriptionsAllowed", "valuePositiveInt": 6},
            {"url": "numberOfRepeatPrescriptionsIssued", "valueUnsignedInt": 2},
            {"url": "authorisationExpiryDate", "valueDateTime": expiry},
        ],
    }


def test_authorisation_expiry_ends_a_plan_without_statement() -> None:
    rx_type = {
        "url": SD + "Extension-CareConnect-GPC-PrescriptionType-1",
        "valueCodeableConcept": cc("repeat", "Repeat", CS + "CareConnect-PrescriptionType-1"),
    }
    plan = _plan(extension=[_repeat_info("2025-04-26"), rx_type])
    stopped = _plan(
        id="r2",
        status="stopped",
        extension=[_repeat_info("2025-04-26")],
        dispenseRequest={"validityPeriod": {"start": "2024-04-26", "end": "2024-06-01"}},
    )
    root = to_xml(make_bundle(_med(), plan, stopped))
    current, past = _activities(root)
    for act, high in ((current, "20250426"), (past, "20240601")):
        # Medication Activity: one IVL_TS with low (CONF:1098-7508); the end of the authorisation
        # is its high, the stop date before the planned expiry.
        (time,) = act.xpath("cda:effectiveTime[@xsi:type='IVL_TS']", namespaces=NS)
        assert time.find("cda:low", NS).get("value") == "20240426"
        assert time.find("cda:high", NS).get("value") == high
        supply_high = act.find("cda:entryRelationship/cda:supply/cda:effectiveTime/cda:high", NS)
        assert supply_high.get("value") == high
    row = entry_row(root, current)
    assert row[3] == "Repeat | 2 of 6 issued | authorised until 2025-04-26"
    assert row[5] == "2025-04-26"
    assert row[7] == "Repeat"


# ---- 5. header: language and contacts ---------------------------------------------------------


def test_language_and_next_of_kin_in_real_record(kit: Any) -> None:
    root = to_xml(xhuma(kit, "9690937286"))
    (lang,) = root.xpath("//cda:patient/cda:languageCommunication", namespaces=NS)
    assert lang.find("cda:languageCode", NS).get("code") == "en"
    assert lang.find("cda:modeCode", NS).get("code") == "RWR"
    assert lang.find("cda:proficiencyLevelCode", NS).get("code") == "E"
    assert lang.find("cda:preferenceInd", NS).get("value") == "false"
    participants = root.xpath("/cda:ClinicalDocument/cda:participant", namespaces=NS)
    assert [p.get("typeCode") for p in participants] == ["IND", "IND"]
    assert sorted(p.find("cda:associatedEntity", NS).get("classCode") for p in participants) == [
        "ECON",
        "NOK",
    ]
    for p in participants:
        entity = p.find("cda:associatedEntity", NS)
        assert entity.find("cda:code", NS).get("code") == "DAUC"
        assert entity.find("cda:telecom", NS).get("value") == "tel:07777123123"
        name = entity.find("cda:associatedPerson/cda:name", NS)
        assert (
            name.findtext("cda:given", namespaces=NS),
            name.findtext("cda:family", namespaces=NS),
        ) == (
            "Jane",
            "Jackson",
        )
        assert entity.findtext("cda:addr/cda:postalCode", namespaces=NS) == "LS1 6AE"
    # Header order (CDA R2 schema): participant after custodian, before documentationOf.
    tags = [etree.QName(c).localname for c in root]
    assert tags.index("custodian") < tags.index("participant") < tags.index("documentationOf")


def test_language_in_synthetic_record(kit: Any) -> None:
    if not kit.synthetic_available():
        pytest.skip("synthetic generator xcagw_devstack.sandbox.synthetic is not installed")
    root = to_xml(kit.synthetic_bundle("9000000009", 20))
    assert root.xpath(
        "//cda:patient/cda:languageCommunication/cda:languageCode/@code", namespaces=NS
    ) == ["en"]


def _communication(code: str, system: str = CS + "CareConnect-HumanLanguage-1") -> dict[str, Any]:
    return {
        "url": SD + "Extension-CareConnect-GPC-NHSCommunication-1",
        "extension": [
            {"url": "language", "valueCodeableConcept": cc(code, code, system)},
            {"url": "preferred", "valueBoolean": True},
            {"url": "interpreterRequired", "valueBoolean": True},
        ],
    }


def test_language_codes_and_contact_roles() -> None:
    pat = patient(
        extension=[_communication("PL"), _communication("q1"), _communication("fr", "other")],
        communication=[{"language": cc("cy", "Welsh", "urn:ietf:bcp:47")}],
        contact=[
            {
                "relationship": [cc("N", "Next-of-Kin", "http://hl7.org/fhir/v2/0131")],
                "name": {"family": "Smith", "given": ["Bob"]},
            },
            {
                "relationship": [{"text": "Carer"}],
                "organization": {"reference": "Organization/o2"},
                "telecom": [{"system": "phone", "value": "0113 7654321", "use": "work"}],
            },
            {"relationship": [{"text": "Daughter"}]},
        ],
    )
    root = to_xml(make_bundle(org("o2", "Leeds Care Ltd"), pat=pat))
    langs = root.xpath("//cda:patient/cda:languageCommunication", namespaces=NS)
    assert [x.find("cda:languageCode", NS).get("code") for x in langs] == ["pl", "cy"]
    assert langs[0].find("cda:preferenceInd", NS).get("value") == "true"
    entities = root.xpath(
        "/cda:ClinicalDocument/cda:participant/cda:associatedEntity", namespaces=NS
    )
    assert [e.get("classCode") for e in entities] == ["NOK", "PRS"]
    assert entities[0].find("cda:associatedPerson/cda:name/cda:given", NS).text == "Bob"
    carer = entities[1]
    assert carer.find("cda:code", NS).get("nullFlavor") == "OTH"
    assert carer.findtext("cda:code/cda:originalText", namespaces=NS) == "Carer"
    assert carer.find("cda:associatedPerson", NS) is None
    assert carer.findtext("cda:scopingOrganization/cda:name", namespaces=NS) == "Leeds Care Ltd"
    assert carer.find("cda:telecom", NS).get("value") == "tel:01137654321"


# ---- results shared between reports -----------------------------------------------------------


def _report(rid: str, *results: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": cc("721981007", "Diagnostic studies report"),
        "issued": "2019-04-03T12:00:00+00:00",
        "result": [{"reference": f"Observation/{r}"} for r in results],
    }


def test_result_shared_by_two_reports_is_in_both() -> None:
    hb = observation(
        "h1", cc("1022431000000105", "Haemoglobin"), valueQuantity={"value": 142, "unit": "g/L"}
    )
    root = to_xml(make_bundle(hb, _report("d1", "h1"), _report("d2", "h1")))
    organizers = section(root, "30954-2").xpath("cda:entry/cda:organizer", namespaces=NS)
    assert len(organizers) == 2
    ids = [o.xpath("cda:component/cda:observation/cda:id/@root", namespaces=NS) for o in organizers]
    assert len(ids[0]) == 1 and ids[0] == ids[1]  # the same act, in each report
    for o in organizers:
        value = o.find("cda:component/cda:observation/cda:value", NS)
        assert (value.get("value"), value.get("unit")) == ("142", "g/L")


def test_result_shared_by_two_reports_in_real_record(kit: Any) -> None:
    root = to_xml(xhuma(kit, "9690937286"))
    organizers = section(root, "30954-2").xpath("cda:entry/cda:organizer", namespaces=NS)
    fbc = [
        o
        for o in organizers
        if "dacb177a"
        in "".join(o.xpath("cda:component/cda:observation/cda:id/@root", namespaces=NS))
        or len(o.findall("cda:component", NS)) >= 19
    ]
    assert len(fbc) == 2
    first, second = (
        o.xpath("cda:component/cda:observation/cda:id/@root", namespaces=NS) for o in fbc
    )
    assert len(second) == 19 and set(second) <= set(first)
    assert not root.xpath(
        "//cda:organizer/cda:component/cda:observation/cda:value[@nullFlavor='NI']", namespaces=NS
    )


# ---- the new parts stay schema and schematron valid --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_new_parts_validate(kit: Any, validator_cache: Path, tmp_path: Path) -> None:
    kit.require_shared()
    pat = patient(
        extension=[_communication("en")],
        contact=[
            {
                "relationship": [{"text": "Emergency contact"}, {"text": "Son"}],
                "name": {"family": "Smith", "given": ["Bob"]},
                "telecom": [{"system": "phone", "value": "07777 123123", "use": "mobile"}],
                "address": {"line": ["1 Lane"], "postalCode": "LS1 1AA"},
            },
            {"relationship": [{"text": "Carer"}], "organization": {"reference": "Organization/o2"}},
            {
                "relationship": [{"text": "Friend"}],
                "telecom": [{"system": "email", "value": "a@b"}],
            },
        ],
    )
    plan = _plan(extension=[_repeat_info("2025-04-26")])
    plan["dispenseRequest"]["quantity"] = _quantity(28, "tablet")
    order = {
        **_plan(id="r3", intent="order", authoredOn="2024-05-01"),
        "basedOn": [{"reference": "MedicationRequest/r1"}],
    }
    hb = observation(
        "h1",
        cc("1022431000000105", "Haemoglobin"),
        valueQuantity={"value": 142, "unit": "g/L"},
        referenceRange=[{"low": {"value": 115}, "high": {"value": 150}}],
    )
    bundle = make_bundle(
        org("o2", "Leeds Care Ltd"),
        _med(),
        plan,
        order,
        hb,
        _report("d1", "h1"),
        _report("d2", "h1"),
        pat=pat,
    )
    out = tmp_path / "details.xml"
    out.write_bytes(convert_bundle(bundle, options=ConvertOptions(effective_time=WHEN)).ccd_xml)
    report = kit.run_validator([out], validator_cache)[out.name]
    messages = "\n".join(f"{m.get('id')}: {m.get('text', '')[:200]}" for m in report["messages"])
    assert report["xsd_errors"] == 0, messages
    assert report["schematron_errors"] == 0, messages
