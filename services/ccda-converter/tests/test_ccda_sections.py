"""Unit tests per section and for the building blocks (dates, codes, tolerant parsing)."""

from __future__ import annotations

from typing import Any

import pytest
from ccda_testkit import NS, WHEN, cc, ccd, listing, patient, section
from ccda_testkit import bundle as record_bundle
from lxml import etree

from ccda_converter.bundle import BundleError
from ccda_converter.codes import concept
from ccda_converter.convert import ConvertOptions, convert_bundle
from ccda_converter.dates import to_ts
from ccda_converter.model import DmdConcept


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    """The practice's record of Jane SMITH, home address included."""
    return record_bundle(*resources, pat=patient(address=True))


def convert(*resources: dict[str, Any], **options: Any) -> tuple[etree._Element, Any]:
    return ccd(bundle(*resources), **options)


def narrative_ids(root: etree._Element) -> set[str]:
    return set(root.xpath("//cda:text//@ID", namespaces=NS))


def assert_refs_resolve(root: etree._Element) -> None:
    ids = narrative_ids(root)
    for ref in root.xpath("//cda:reference/@value", namespaces=NS):
        assert ref.startswith("#") and ref[1:] in ids, ref


# ---- building blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023", "2023"),
        ("2023-05", "202305"),
        ("2023-05-31", "20230531"),
        ("2023-05-31T22:05-05:00", "202305312205-0500"),
        ("2019-05-01T10:38:00", "20190501103800"),
        ("2016-07-25T12:00:00.000+01:00", "20160725120000.000+0100"),
        ("2020-01-01T00:00:00Z", "20200101000000+0000"),
        ("not a date", None),
        ("2020-13-01", None),
        (None, None),
    ],
)
def test_dates_keep_precision(value: Any, expected: str | None) -> None:
    assert to_ts(value) == expected


def test_codes_snomed_first_with_spaces_and_unknown_systems() -> None:
    c = concept(
        {
            "coding": [
                {
                    "system": "https://fhir.hl7.org.uk/Id/emis-drug-codes",
                    "code": "X1",
                    "display": "A",
                },
                {
                    "system": "http://snomed.info/sct ",
                    "code": " 86290005",
                    "display": "Respiratory rate",
                },
                {"system": "https://example.org/local", "code": "L9", "display": "Local"},
            ]
        }
    )
    assert [x.code for x in c.codes] == ["X1", "86290005"]
    assert c.unknown == [("https://example.org/local", "L9", "Local")]


def test_not_a_bundle_is_a_clear_error() -> None:
    with pytest.raises(BundleError, match="OperationOutcome"):
        convert_bundle({"resourceType": "OperationOutcome"})
    with pytest.raises(BundleError, match="not valid JSON"):
        convert_bundle(b"{nope")


def test_odd_entries_never_drop_the_others() -> None:
    data = bundle(
        {
            "resourceType": "Condition",
            "id": "c1",
            "clinicalStatus": "active",
            "code": cc("1", "One"),
        },
    )
    data["entry"] += [
        "garbage",
        {"fhir_comments": ["x"]},
        {"resourceType": "Condition", "id": "c2", "code": cc("2", "Two")},  # no "resource" wrapper
        {"resource": {"resourceType": "Flag", "id": "f1", "code": {"text": "Violent"}}},
    ]
    result = convert_bundle(data, options=ConvertOptions(effective_time=WHEN))
    root = etree.fromstring(result.ccd_xml)
    assert result.coverage["Condition"].mapped == 2
    assert result.coverage["Flag"].narrative_only == 1
    assert len(section(root, "11450-4").xpath("cda:entry", namespaces=NS)) == 2
    notes = section(root, "34109-9")
    assert "Violent" in "".join(notes.itertext())
    assert "not a JSON object" in "".join(notes.itertext())


# ---- header --------------------------------------------------------------------------------------


def test_header() -> None:
    root, result = convert(
        recipient_organization_name="St Elsewhere", recipient_organization_id="urn:oid:1.2.3"
    )
    assert root.find("cda:realmCode", NS).get("code") == "US"
    roots = [(t.get("root"), t.get("extension")) for t in root.findall("cda:templateId", NS)]
    assert ("2.16.840.1.113883.10.20.22.1.1", "2015-08-01") in roots
    assert ("2.16.840.1.113883.10.20.22.1.2", None) in roots
    assert root.find("cda:code", NS).get("code") == "34133-9"
    assert root.find("cda:effectiveTime", NS).get("value") == "20260101120000+0000"
    nhs = root.find("cda:recordTarget/cda:patientRole/cda:id", NS)
    assert (nhs.get("root"), nhs.get("extension")) == ("2.16.840.1.113883.2.1.4.1", "9000000009")
    assert (
        root.findtext("cda:recordTarget/cda:patientRole/cda:addr/cda:country", namespaces=NS)
        == "GB"
    )
    pat = root.find("cda:recordTarget/cda:patientRole/cda:patient", NS)
    assert pat.find("cda:raceCode", NS).get("nullFlavor") == "UNK"
    assert pat.find("cda:administrativeGenderCode", NS).get("code") == "F"
    assert pat.find("cda:birthTime", NS).get("value") == "19800203"
    cust = root.find(
        "cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization/cda:id", NS
    )
    assert (cust.get("root"), cust.get("extension")) == (
        "2.16.840.1.113883.2.1.3.2.4.19.1",
        "B82617",
    )
    assert root.find("cda:author/cda:assignedAuthor/cda:id", NS).get("nullFlavor") == "NA"
    assert root.findtext(".//cda:receivedOrganization/cda:name", namespaces=NS) == "St Elsewhere"
    assert root.find("cda:documentationOf/cda:serviceEvent", NS).get("classCode") == "PCPR"
    assert result.document_id == root.find("cda:id", NS).get("root")


# ---- allergies ---------------------------------------------------------------------------------


def test_allergies_nka_resolved_reactions_and_empty_reason() -> None:
    active = {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "clinicalStatus": "active",
        "category": ["medication"],
        "type": "allergy",
        "criticality": "high",
        "code": cc("373270004", "Penicillin"),
        "reaction": [{"manifestation": [cc("271807003", "Rash")], "severity": "severe"}],
        "note": [{"text": "Hand entered"}],
    }
    nka = {
        "resourceType": "AllergyIntolerance",
        "id": "a2",
        "clinicalStatus": "active",
        "code": cc("716186003", "No known allergy"),
    }
    ended = {
        "resourceType": "AllergyIntolerance",
        "id": "a3",
        "clinicalStatus": "resolved",
        "category": ["food"],
        "code": cc("256349002", "Peanut"),
        "extension": [
            {
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-AllergyIntoleranceEnd-1",
                "extension": [{"url": "endDate", "valueDateTime": "2010-01-01"}],
            }
        ],
    }
    ended_list = listing("1103671000000101", "Ended allergies", ["#a3"], contained=[ended])
    root, result = convert(
        active,
        nka,
        listing(
            "886921000000105",
            "Allergies and adverse reactions",
            ["AllergyIntolerance/a1", "AllergyIntolerance/a2"],
        ),
        ended_list,
    )
    sec = section(root, "48765-2")
    acts = sec.xpath("cda:entry/cda:act", namespaces=NS)
    assert [a.find("cda:statusCode", NS).get("code") for a in acts] == [
        "active",
        "active",
        "completed",
    ]
    obs = [a.find("cda:entryRelationship/cda:observation", NS) for a in acts]
    assert (
        obs[0].find("cda:value", NS).get("code") == "416098002"
    )  # drug allergy from category+type
    assert obs[1].get("negationInd") == "true"  # NKA stays an assertion
    assert obs[2].find("cda:value", NS).get("code") == "418471000"
    assert obs[0].xpath(
        ".//cda:observation[cda:code/@code='SEV']/cda:value/@code", namespaces=NS
    ) == ["24484000"]
    assert obs[0].xpath(
        ".//cda:observation[cda:code/@code='82606-5']/cda:value/@code", namespaces=NS
    ) == ["CRITH"]
    assert result.coverage["AllergyIntolerance"].mapped == 3
    assert_refs_resolve(root)


def test_allergy_status_observation_from_clinical_status() -> None:
    """ConceptMap-FC-AllergyStatus: a known STU3 clinicalStatus becomes an Allergy Status
    Observation (4.28) in the Allergy - Intolerance Observation; an absent or unknown one
    gives none."""
    substances = {
        "active": "373270004",
        "inactive": "256349002",
        "resolved": "91936005",
        None: "300916003",
        "refuted": "227493005",
    }
    allergies = []
    for i, (status, code) in enumerate(substances.items()):
        res = {
            "resourceType": "AllergyIntolerance",
            "id": f"a{i}",
            "category": ["medication"],
            "code": cc(code, f"Substance {i}"),
            "recorder": {"reference": "Practitioner/pr1"},
            "assertedDate": "2020-01-01",
        }
        if status is not None:
            res["clinicalStatus"] = status
        allergies.append(res)
    practitioner = {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Who"}]}
    root, _ = convert(practitioner, *allergies)
    found = {}
    for obs in section(root, "48765-2").xpath(
        "cda:entry/cda:act/cda:entryRelationship/cda:observation", namespaces=NS
    ):
        # The allergen code, or the allergy's own code kept as a value translation when it
        # is not recognisably a substance (only 4.7's own value, not the nested status's).
        substance = obs.xpath(
            "cda:participant//cda:playingEntity/cda:code/@code | cda:value/cda:translation/@code",
            namespaces=NS,
        )[0]
        status = obs.xpath(
            "cda:entryRelationship[@typeCode='SUBJ'][@inversionInd='true']/cda:observation"
            "[cda:templateId[@root='2.16.840.1.113883.10.20.22.4.28'][@extension='2019-06-20']]",
            namespaces=NS,
        )
        if status:
            assert status[0].find("cda:code", NS).get("code") == "33999-4"
            assert status[0].find("cda:statusCode", NS).get("code") == "completed"
            value = status[0].find("cda:value", NS)
            assert value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "CE"
            assert value.get("codeSystem") == "2.16.840.1.113883.6.96"
            found[substance] = value.get("code")
        # Schema order: the author before the participant, the status relationship after it.
        names = [etree.QName(child).localname for child in obs]
        assert names.index("author") < names.index("participant")
        if status:
            assert names.index("participant") < names.index("entryRelationship")
    assert found == {
        substances["active"]: "55561003",
        substances["inactive"]: "73425007",
        substances["resolved"]: "413322009",
    }


def test_empty_allergies_list_is_not_no_known_allergies() -> None:
    empty = listing(
        "886921000000105",
        "Allergies and adverse reactions",
        [],
        emptyReason={"coding": [{"system": "x", "code": "no-content-recorded"}]},
        extension=[
            {
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-ListWarningCode-1",
                "valueCode": "data-in-transit",
            }
        ],
    )
    root, _ = convert(empty)
    sec = section(root, "48765-2")
    assert sec.get("nullFlavor") == "NI"
    assert not sec.xpath("cda:entry", namespaces=NS)
    text = "".join(sec.find("cda:text", NS).itertext())
    assert "not a statement that the patient has none" in text
    assert "data-in-transit" in text


def test_nil_known_allergies_list_is_a_negated_assertion() -> None:
    nil = listing(
        "886921000000105", "Allergies", [], emptyReason={"coding": [{"code": "nil-known"}]}
    )
    root, _ = convert(nil)
    sec = section(root, "48765-2")
    assert sec.get("nullFlavor") is None
    assert sec.xpath(".//cda:observation/@negationInd", namespaces=NS) == ["true"]


# ---- medications -------------------------------------------------------------------------------


def _meds() -> list[dict[str, Any]]:
    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": cc("39720311000001101", "Paracetamol 500mg tablets"),
    }
    plan = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "intent": "plan",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2024-01-01",
        "dosageInstruction": [
            {"text": "1 tablet when required", "asNeededCodeableConcept": cc("22253000", "Pain")}
        ],
        "dispenseRequest": {"quantity": {"value": 28, "unit": "tablet"}},
        "extension": [
            {
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-MedicationRepeatInformation-1",
                "extension": [{"url": "numberOfRepeatPrescriptionsAllowed", "valuePositiveInt": 6}],
            }
        ],
    }
    issue = {
        "resourceType": "MedicationRequest",
        "id": "r2",
        "intent": "order",
        "status": "completed",
        "basedOn": [{"reference": "MedicationRequest/r1"}],
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2024-02-01",
    }
    stmt = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "basedOn": [{"reference": "MedicationRequest/r1"}],
        "medicationReference": {"reference": "Medication/m1"},
        "effectivePeriod": {"start": "2024-01-01"},
        "dosage": [
            {
                "text": "1 tablet when required",
                "patientInstruction": "With food",
                "asNeededCodeableConcept": cc("22253000", "Pain"),
            }
        ],
    }
    past = {
        **stmt,
        "id": "s2",
        "status": "completed",
        "basedOn": [],
        "effectivePeriod": {"start": "2020-01-01", "end": "2020-02-01"},
        "dosage": [{"text": "as needed", "asNeededBoolean": True}],
    }
    return [med, plan, issue, stmt, past]


def test_medications_activity_supply_sig_prn_and_dmd_enrichment() -> None:
    dmd = {
        "39720311000001101": DmdConcept(
            code="39720311000001101",
            vmp_code="42109611000001109",
            vmp_display="Paracetamol 500mg tablets (VMP)",
            route_code="26643006",
            route_display="Oral",
        )
    }
    root, result = convert(*_meds(), dmd=dmd)
    sec = section(root, "10160-0")
    acts = sec.xpath("cda:entry/cda:substanceAdministration", namespaces=NS)
    assert [a.find("cda:statusCode", NS).get("code") for a in acts] == ["active", "completed"]
    code = acts[0].find(".//cda:manufacturedMaterial/cda:code", NS)
    assert code.get("nullFlavor") == "OTH"  # no RxNorm: OTH + dm+d translations
    assert {t.get("code") for t in code.findall("cda:translation", NS)} == {
        "39720311000001101",
        "42109611000001109",
    }
    assert acts[0].find("cda:routeCode", NS).get("code") == "26643006"
    supplies = acts[0].xpath("cda:entryRelationship/cda:supply", namespaces=NS)
    assert len(supplies) == 2 and supplies[0].find("cda:repeatNumber", NS).get("value") == "6"
    assert acts[0].xpath(".//cda:substanceAdministration/cda:code/@code", namespaces=NS) == [
        "76662-6"
    ]
    assert acts[0].xpath("cda:precondition/cda:criterion/cda:value/@code", namespaces=NS) == [
        "22253000"
    ]
    assert acts[1].xpath("cda:precondition/cda:criterion/cda:value/@nullFlavor", namespaces=NS) == [
        "NI"
    ]
    captions = sec.xpath("cda:text/cda:table/cda:caption/text()", namespaces=NS)
    assert captions == ["Current medication", "Past medication"]
    assert result.coverage["MedicationRequest"].mapped == 2
    assert_refs_resolve(root)


# ---- problems ----------------------------------------------------------------------------------


def test_problems_status_significance_and_links() -> None:
    cond = {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": "inactive",
        "code": cc("38341003", "Hypertension"),
        "onsetDateTime": "2010",
        "abatementDateTime": "2015-06",
        "extension": [
            {
                "url": "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-ProblemSignificance-1",
                "valueCode": "major",
            },
            {
                "url": "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-RelatedClinicalContent-1",
                "valueReference": {"reference": "Observation/o1"},
            },
            {
                "url": "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-RelatedClinicalContent-1",
                "valueReference": {"reference": "Encounter/missing"},
            },
        ],
    }
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": cc("49727002", "Cough"),
    }
    root, _ = convert(cond, obs)
    act = section(root, "11450-4").find("cda:entry/cda:act", NS)
    assert (
        act.find("cda:statusCode", NS).get("code") == "completed"
    )  # FHIR inactive is not a CDA act status
    po = act.find("cda:entryRelationship/cda:observation", NS)
    assert po.find("cda:effectiveTime/cda:low", NS).get("value") == "2010"
    assert po.find("cda:effectiveTime/cda:high", NS).get("value") == "201506"
    assert po.find("cda:value", NS).get("code") == "38341003"
    assert act.xpath(
        ".//cda:observation[cda:code/@code='225773000']/cda:value/@code", namespaces=NS
    ) == ["394849002"]
    refs = act.xpath(
        "cda:entryRelationship/cda:act[cda:templateId/@root='2.16.840.1.113883.10.20.22.4.122']/cda:id/@root",
        namespaces=NS,
    )
    target = root.xpath(
        "//cda:observation[cda:code/@code='ASSERTION'][cda:value/@code='49727002']/cda:id/@root",
        namespaces=NS,
    )
    assert refs == target  # the dangling Encounter link is narrative only
    assert "Encounter not included" in "".join(
        act.getparent().getparent().find("cda:text", NS).itertext()
    )


# ---- immunizations --------------------------------------------------------------------------


def test_immunization_not_given_and_cvx_slot() -> None:
    imm = {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "notGiven": True,
        "vaccineCode": cc("39114911000001105", "Influenza vaccine"),
        "date": "2019-10",
        "explanation": {"reasonNotGiven": [cc("591000119102", "Vaccine refused")]},
    }
    root, _ = convert(imm)
    sbadm = section(root, "11369-6").find("cda:entry/cda:substanceAdministration", NS)
    assert sbadm.get("negationInd") == "true"
    assert sbadm.find("cda:effectiveTime", NS).get("value") == "201910"
    code = sbadm.find(".//cda:manufacturedMaterial/cda:code", NS)
    assert (
        code.get("nullFlavor") == "OTH"
        and code.find("cda:translation", NS).get("code") == "39114911000001105"
    )


# ---- results, vitals, social, notes ----------------------------------------------------------


def test_results_vitals_social_and_notes_routing() -> None:
    group = {
        "resourceType": "Observation",
        "id": "g1",
        "status": "final",
        "code": cc("26604007", "FBC"),
        "related": [
            {"type": "has-member", "target": {"reference": "Observation/h1"}},
            {"target": {"reference": "Observation/g1"}},
        ],
    }
    hb = {
        "resourceType": "Observation",
        "id": "h1",
        "status": "final",
        "code": cc("1022431000000105", "Haemoglobin"),
        "valueQuantity": {"value": 142, "unit": "g/L"},
        "referenceRange": [
            {"low": {"value": 115}, "high": {"value": 150}},
            {"text": "adult range"},
        ],
        "comment": "Normal",
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": "d1",
        "status": "final",
        "code": cc("721981007", "Diagnostic studies report"),
        "result": [{"reference": "Observation/g1"}],
        "specimen": [{"reference": "Specimen/s1"}],
    }
    specimen = {
        "resourceType": "Specimen",
        "id": "s1",
        "type": cc("122555007", "Venous blood specimen"),
    }
    bp = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": cc("163020007", "O/E - blood pressure reading"),
        "effectiveDateTime": "2020-01-01T10:00:00+00:00",
        "component": [
            {"code": cc("72313002", "Systolic"), "valueQuantity": {"value": 120, "unit": "mmHg"}},
            {
                "code": cc("1091811000000102", "Diastolic"),
                "valueQuantity": {"value": 80, "unit": "mmHg"},
            },
        ],
    }
    temp = {
        "resourceType": "Observation",
        "id": "t",
        "status": "final",
        "code": cc("703421000", "Temperature"),
        "effectiveDateTime": "2020-01-01T10:00:00+00:00",
        "valueQuantity": {
            "value": 37.2,
            "unit": "C",
            "system": "http://unitsofmeasure.org",
            "code": "Cel",
        },
    }
    smoke = {
        "resourceType": "Observation",
        "id": "sm",
        "status": "final",
        "code": cc("266919005", "Never smoked tobacco"),
        "effectiveDateTime": "2019",
    }
    note = {
        "resourceType": "Observation",
        "id": "n",
        "status": "final",
        "code": cc("37331000000100", "Comment note"),
        "comment": "Doing better.",
    }
    finding = {
        "resourceType": "Observation",
        "id": "f",
        "status": "final",
        "code": cc("49727002", "Cough"),
    }
    root, result = convert(group, hb, report, specimen, bp, temp, smoke, note, finding)
    results = section(root, "30954-2")
    organizers = results.xpath("cda:entry/cda:organizer", namespaces=NS)
    assert len(organizers) == 2  # the report, and one uncategorised-data cluster
    assert organizers[0].find("cda:specimen", NS) is not None
    assert (
        len(organizers[0].findall("cda:component", NS)) == 2
    )  # group flattened, self-link ignored
    hb_obs = organizers[0].xpath(
        ".//cda:observation[cda:code/@code='1022431000000105']", namespaces=NS
    )[0]
    assert hb_obs.find("cda:value", NS).get("unit") == "g/L"
    assert len(hb_obs.findall("cda:referenceRange", NS)) == 2
    cough = organizers[1].find("cda:component/cda:observation", NS)
    assert (
        cough.find("cda:code", NS).get("code") == "ASSERTION"
        and cough.find("cda:value", NS).get("code") == "49727002"
    )
    vitals = section(root, "8716-3")
    codes = vitals.xpath(".//cda:component/cda:observation/cda:code/@code", namespaces=NS)
    assert sorted(codes) == ["8310-5", "8462-4", "8480-6"]
    assert vitals.xpath(
        ".//cda:observation[cda:code/@code='8480-6']/cda:value/@unit", namespaces=NS
    ) == ["mm[Hg]"]
    social = section(root, "29762-2")
    assert social.xpath(".//cda:observation/cda:code/@code", namespaces=NS) == ["72166-2"]
    assert social.xpath(".//cda:observation/cda:value/@code", namespaces=NS) == ["266919005"]
    notes = section(root, "34109-9")
    assert notes.xpath("cda:entry/cda:act/cda:templateId/@root", namespaces=NS) == [
        "2.16.840.1.113883.10.20.22.4.202"
    ]
    assert result.coverage["Observation"].mapped == 7
    assert result.coverage["Specimen"].mapped == 1
    assert_refs_resolve(root)


def test_encounters_plan_and_empty_sections() -> None:
    enc = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "type": [{"text": "Surgery Consultation"}],
        "period": {"start": "2019-03-28T10:30:00+00:00"},
    }
    consult = {
        **listing("325851000000107", "Consultation", ["Observation/n"]),
        "id": "L1",
        "encounter": {"reference": "Encounter/e1"},
    }
    note = {
        "resourceType": "Observation",
        "id": "n",
        "status": "final",
        "code": cc("37331000000100", "Comment note"),
        "comment": "Seen today.",
    }
    referral = {
        "resourceType": "ReferralRequest",
        "id": "rr",
        "status": "active",
        "intent": "order",
        "authoredOn": "2020-02-02",
        "reasonCode": [cc("49727002", "Cough")],
    }
    recall = {
        "resourceType": "ProcedureRequest",
        "id": "pr",
        "status": "active",
        "intent": "plan",
        "code": cc("1234", "Recall"),
        "occurrenceDateTime": "2027-01-01",
    }
    root, _ = convert(enc, consult, note, referral, recall)
    enc_sec = section(root, "46240-8")
    assert enc_sec.find("cda:entry/cda:encounter/cda:code", NS).get("nullFlavor") == "OTH"
    assert "Seen today." in "".join(enc_sec.find("cda:text", NS).itertext())
    plan = section(root, "18776-5")
    assert len(plan.findall("cda:entry", NS)) == 2
    for loinc in ("48765-2", "10160-0", "11450-4", "30954-2", "8716-3", "11369-6", "47519-4"):
        sec = section(root, loinc)
        assert (
            sec.get("nullFlavor") == "NI"
            and sec.find("cda:text", NS).find("cda:paragraph", NS) is not None
        )


def test_entry_ids_are_stable_and_document_ids_unique() -> None:
    first = convert_bundle(bundle(*_meds()), options=ConvertOptions(effective_time=WHEN))
    second = convert_bundle(bundle(*_meds()), options=ConvertOptions(effective_time=WHEN))
    ids = lambda r: etree.fromstring(r.ccd_xml).xpath("//cda:entry//cda:id/@root", namespaces=NS)  # noqa: E731
    assert ids(first) == ids(second)
    assert first.document_id != second.document_id
    with pytest.raises(BundleError):
        convert_bundle(bundle(), options=ConvertOptions(document_id_root="not-an-oid"))
