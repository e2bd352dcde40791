"""Allergen, immunisation and problem coding: what each slot of the CCD may carry.

- Allergy - Intolerance Observation (4.7): playingEntity/code is the allergen (Substance-Reactant,
  CONF:1098-7421), never a disorder ("Peanut-induced anaphylaxis") or a generic concept
  ("Transfer-degraded drug allergy"); such a code stays as a translation of the value.
- Immunizations Section: the non-Immunization items of the Immunisations List (consent and
  dissent Observations) are listed in its narrative.
- Immunization Activity (4.52) with negationInd: no "vaccination not done" code in the vaccine.
- Problem Observation (4.4) of a problem that is not active: effectiveTime/high always present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ccda_testkit import (
    NS,
    SCT,
    WHEN,
    cc,
    ccd,
    collection,
    listing,
    observation,
    patient,
    section,
)
from lxml import etree

from ccda_converter.convert import ConvertOptions, convert_bundle

SD = "https://fhir.nhs.uk/STU3/StructureDefinition/"
VACCINATION_PROCEDURE = (
    "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-VaccinationProcedure-1"
)
ALLERGIES = "48765-2"
IMMUNIZATIONS = "11369-6"
PROBLEMS = "11450-4"


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    """Jane SMITH (no practice) and ``resources``."""
    return collection(patient(name_use=None, practice=None), *resources)


def convert(data: dict[str, Any]) -> tuple[etree._Element, Any]:
    return ccd(data)


def referenced_text(root: etree._Element, ref: str) -> str:
    assert ref.startswith("#")
    found = root.xpath(f"//cda:text//*[@ID='{ref[1:]}']", namespaces=NS)
    assert len(found) == 1, ref
    return "".join(found[0].itertext())


def allergy_observations(root: etree._Element) -> list[etree._Element]:
    return section(root, ALLERGIES).xpath(
        "cda:entry/cda:act/cda:entryRelationship/cda:observation"
        "[cda:templateId/@root='2.16.840.1.113883.10.20.22.4.7']",
        namespaces=NS,
    )


def by_value_translation(root: etree._Element) -> dict[str, etree._Element]:
    """Allergy observations by the code kept as a translation of their value."""
    out = {}
    for obs in allergy_observations(root):
        for code in obs.xpath("cda:value/cda:translation/@code", namespaces=NS):
            out[code] = obs
    return out


def entity_code(obs: etree._Element) -> etree._Element:
    found = obs.xpath(
        "cda:participant/cda:participantRole/cda:playingEntity/cda:code", namespaces=NS
    )
    assert len(found) == 1
    return found[0]


def real_bundle(kit: Any, name: str) -> dict[str, Any]:
    for path in kit.real_bundle_paths():
        if Path(path).name == name:
            return dict(json.loads(Path(path).read_bytes()))
    pytest.skip(f"{name} not found under {kit.shared_dir()}")


def allergy(rid: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": rid,
        "clinicalStatus": "active",
        "category": ["medication"],
        "code": code,
        **extra,
    }


# ---- allergies --------------------------------------------------------------------------------


def test_allergen_slot_takes_only_substances_and_products() -> None:
    resources = [
        # A disorder: no text, the display names the allergen.
        allergy("a1", cc("241933001", "Peanut-induced anaphylaxis"), category=["food"]),
        # A generic concept: the allergen is only in the text.
        allergy(
            "a2",
            cc("196461000000101", "Transfer-degraded drug allergy", text="Dog allergy"),
        ),
        # A dm+d product (UK drug extension namespace).
        allergy("a3", cc("42109411000001106", "Paracetamol 500mg capsules", text="PARACETAMOL")),
        # A SNOMED substance sent with its fully specified name.
        allergy("a4", cc("89707004", "Sesame oil (substance)"), category=["food"]),
        # A drug dictionary code beside its SNOMED equivalent.
        allergy(
            "a5",
            {
                "coding": [
                    {
                        "system": "https://fhir.hl7.org.uk/Id/resipuk-gemscript-drug-codes",
                        "code": "60153020",
                        "display": "Atenolol 50mg tablets",
                    },
                    {"system": SCT, "code": "318420003", "display": "Atenolol 50mg tablets"},
                ]
            },
        ),
        # A disorder whose reaction names the substance.
        allergy(
            "a6",
            cc("91935009", "Allergy to peanuts"),
            category=["food"],
            reaction=[
                {
                    "manifestation": [cc("39579001", "Anaphylaxis")],
                    "substance": cc("762952008", "Peanut (substance)", text="Peanut"),
                }
            ],
        ),
        listing(
            "886921000000105",
            "Allergies and adverse reactions",
            [f"AllergyIntolerance/a{i}" for i in range(1, 7)],
        ),
    ]
    root, result = convert(bundle(*resources))
    obs = allergy_observations(root)
    assert len(obs) == 6
    assert result.coverage["AllergyIntolerance"].mapped == 6

    for i, allergen in ((0, "Peanut-induced anaphylaxis"), (1, "Dog allergy")):
        code = entity_code(obs[i])
        assert code.get("nullFlavor") == "OTH" and code.get("code") is None
        # Not even as a translation: the slot is for substances only.
        assert code.find("cda:translation", NS) is None
        ref = code.find("cda:originalText/cda:reference", NS).get("value")
        assert referenced_text(root, ref) == allergen
    assert obs[0].xpath("cda:value/cda:translation/@code", namespaces=NS) == ["241933001"]
    assert obs[1].xpath("cda:value/cda:translation/@code", namespaces=NS) == ["196461000000101"]
    # The value keeps its Allergy and Intolerance Type code.
    assert obs[1].find("cda:value", NS).get("code") == "419511003"

    assert entity_code(obs[2]).get("code") == "42109411000001106"
    assert entity_code(obs[3]).get("code") == "89707004"
    atenolol = entity_code(obs[4])
    assert atenolol.get("code") == "318420003"
    assert atenolol.xpath("cda:translation/@code", namespaces=NS) == ["60153020"]
    for product in obs[2:5]:
        assert product.find("cda:value/cda:translation", NS) is None

    peanut = entity_code(obs[5])
    assert peanut.get("code") == "762952008"
    assert peanut.findtext("cda:originalText", namespaces=NS) == "Peanut"
    assert obs[5].xpath("cda:value/cda:translation/@code", namespaces=NS) == ["91935009"]
    # The narrative names the allergen of every row.
    text = "".join(section(root, ALLERGIES).find("cda:text", NS).itertext())
    for name in ("Peanut-induced anaphylaxis", "Dog allergy", "PARACETAMOL", "substance: Peanut"):
        assert name in text


def test_dmd_enrichment_marks_a_core_snomed_product() -> None:
    """A dm+d VMP may have a core SNOMED id (322280009): only the dm+d enrichment tells."""
    from ccda_converter.model import DmdConcept

    res = allergy("a1", cc("322280009", "Paracetamol 500mg capsules"))
    data = bundle(res)
    plain, _ = convert(data)
    assert entity_code(allergy_observations(plain)[0]).get("nullFlavor") == "OTH"
    enriched = convert_bundle(
        data,
        options=ConvertOptions(
            effective_time=WHEN, dmd={"322280009": DmdConcept("322280009", concept_class="VMP")}
        ),
    )
    obs = allergy_observations(etree.fromstring(enriched.ccd_xml))[0]
    assert entity_code(obs).get("code") == "322280009"


def test_real_record_disorders_are_not_allergens(kit: Any) -> None:
    """Xhuma fixture 9692136744: 241933001 "Peanut-induced anaphylaxis" (a disorder) and
    196461000000101 "Transfer-degraded drug allergy" (the allergen only in code.text)."""
    root, _ = convert(real_bundle(kit, "9692136744.json"))
    found = by_value_translation(root)
    anaphylaxis = entity_code(found["241933001"])
    assert anaphylaxis.get("nullFlavor") == "OTH"
    ref = anaphylaxis.find("cda:originalText/cda:reference", NS).get("value")
    assert referenced_text(root, ref) == "Peanut-induced anaphylaxis"
    degraded = [
        obs
        for obs in allergy_observations(root)
        if "196461000000101" in obs.xpath("cda:value/cda:translation/@code", namespaces=NS)
    ]
    allergens = set()
    for obs in degraded:
        code = entity_code(obs)
        assert code.get("nullFlavor") == "OTH"
        allergens.add(
            referenced_text(root, code.find("cda:originalText/cda:reference", NS).get("value"))
        )
    assert "Dog allergy" in allergens
    assert any(a.startswith("VITAMIN D (all components considered allergens") for a in allergens)
    # Only the three dm+d products of this record are coded allergens.
    coded = set(
        section(root, ALLERGIES).xpath(".//cda:playingEntity/cda:code/@code", namespaces=NS)
    )
    assert coded == {"42109411000001106", "638311000001103", "4621811000001105"}


def test_synthetic_allergies_keep_their_disorder_codes_out_of_the_allergen(kit: Any) -> None:
    """The sandbox generator codes allergies as disorders ("Allergy to penicillin")."""
    if not kit.synthetic_available():
        pytest.skip("synthetic generator xcagw_devstack.sandbox.synthetic is not installed")
    checked = 0
    for _name, nhs, size in kit.synthetic_cases()[:8]:
        data = kit.synthetic_bundle(nhs, size)
        # Ended allergies are contained in their List.
        resources = [e["resource"] for e in data["entry"]]
        resources += [c for r in resources for c in r.get("contained", [])]
        codes = {
            r["code"]["coding"][0]["code"]
            for r in resources
            if r["resourceType"] == "AllergyIntolerance"
        }
        root, _ = convert(data)
        for obs in allergy_observations(root):
            if obs.get("negationInd") == "true":
                continue
            assert entity_code(obs).get("nullFlavor") == "OTH"
            kept = obs.xpath("cda:value/cda:translation/@code", namespaces=NS)
            assert len(kept) == 1 and kept[0] in codes
            checked += 1
    assert checked > 0


# ---- immunizations ----------------------------------------------------------------------------


def test_real_dissent_is_listed_in_the_immunizations_section(kit: Any) -> None:
    """GP Connect spec example immunizations_response3: the Immunisations List holds only the
    Observation "No consent for any immunization" with a comment."""
    root, result = convert(real_bundle(kit, "immunizations_response3.json"))
    sec = section(root, IMMUNIZATIONS)
    text = "".join(sec.find("cda:text", NS).itertext())
    assert "No consent for any immunization" in text
    assert "Patient has expressed dissent for all immunisations" in text
    assert "No information about immunizations" not in text
    # No Immunization Activity: CONF:1198-9019 then requires the section nullFlavor.
    assert sec.get("nullFlavor") == "NI"
    assert not sec.xpath("cda:entry", namespaces=NS)
    # Still a coded entry under Results.
    assert result.coverage["Observation"].mapped == 1


def test_list_items_beside_immunizations() -> None:
    imm = {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "notGiven": False,
        "vaccineCode": cc("46233009", "Influenza virus vaccine"),
        "date": "2019-10-01",
    }
    consent = observation(
        "o1",
        cc("310375005", "Immunisation consent given"),
        effectiveDateTime="2019-09-30",
        valueString="Verbal",
        comment="Consent from patient",
    )
    root, result = convert(
        bundle(
            imm,
            consent,
            listing("1102181000000102", "Immunisations", ["Immunization/i1", "Observation/o1"]),
        )
    )
    sec = section(root, IMMUNIZATIONS)
    assert sec.get("nullFlavor") is None
    assert len(sec.xpath("cda:entry/cda:substanceAdministration", namespaces=NS)) == 1
    rows = sec.xpath(
        "cda:text/cda:table[cda:caption='Other items in the Immunisations list']/cda:tbody/cda:tr",
        namespaces=NS,
    )
    assert len(rows) == 1
    assert ["".join(td.itertext()) for td in rows[0]] == [
        "Immunisation consent given",
        "2019-09-30",
        "Verbal",
        "Consent from patient",
    ]
    assert result.coverage["Observation"].mapped == 1


def test_synthetic_consent_observations_are_listed(kit: Any) -> None:
    if not kit.synthetic_available():
        pytest.skip("synthetic generator xcagw_devstack.sandbox.synthetic is not installed")
    listed = 0
    for _name, nhs, size in kit.synthetic_cases():
        if size is not None:
            continue
        data = kit.synthetic_bundle(nhs, size)
        everything = [e["resource"] for e in data["entry"]]
        # Lists have no id: look items up by reference among the rest.
        resources = {f"{r['resourceType']}/{r.get('id')}": r for r in everything}
        items = [
            resources[entry["item"]["reference"]]
            for lst in everything
            if lst["resourceType"] == "List"
            and lst["code"]["coding"][0]["code"] == "1102181000000102"
            for entry in lst.get("entry", [])
            if not entry["item"]["reference"].startswith("Immunization/")
        ]
        if not items:
            continue
        root, _ = convert(data)
        text = "".join(section(root, IMMUNIZATIONS).find("cda:text", NS).itertext())
        for item in items:
            assert item["code"]["coding"][0]["display"] in text
            listed += 1
    assert listed > 0


def _material_code(sbadm: etree._Element) -> etree._Element:
    return sbadm.find(".//cda:manufacturedMaterial/cda:code", NS)


def test_real_not_given_vaccine_has_no_not_done_code(kit: Any) -> None:
    """GP Connect spec example immunizations_response2: ...ad46 is notGiven with the
    VaccinationProcedure 6041000175108 "Hepatitis A vaccination not done"; ...ad45 is given."""
    root, _ = convert(real_bundle(kit, "immunizations_response2.json"))
    acts = section(root, IMMUNIZATIONS).xpath(
        "cda:entry/cda:substanceAdministration", namespaces=NS
    )
    by_negation = {a.get("negationInd"): a for a in acts}
    assert set(by_negation) == {"true", "false"}
    not_given = _material_code(by_negation["true"])
    assert not not_given.xpath(".//@code", namespaces=NS)  # vaccineCode is UNK
    assert not_given.get("nullFlavor") == "OTH"
    assert not_given.find("cda:originalText/cda:reference", NS) is not None
    given = _material_code(by_negation["false"])
    assert given.xpath("cda:translation/@code", namespaces=NS) == ["170378007"]


def test_not_given_vaccine_keeps_only_the_vaccine_code(kit: Any) -> None:
    imm = {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "notGiven": True,
        "vaccineCode": cc("14745005", "Hepatitis A vaccine"),
        "extension": [
            {
                "url": VACCINATION_PROCEDURE,
                "valueCodeableConcept": cc("6041000175108", "Hepatitis A vaccination not done"),
            }
        ],
        "date": "2019-10-01",
    }
    root, _ = convert(bundle(imm))
    sbadm = section(root, IMMUNIZATIONS).find("cda:entry/cda:substanceAdministration", NS)
    assert sbadm.get("negationInd") == "true"
    code = _material_code(sbadm)
    assert code.xpath(".//@code", namespaces=NS) == ["14745005"]
    assert "Hepatitis A vaccination not done" in "".join(
        section(root, IMMUNIZATIONS).find("cda:text", NS).itertext()
    )  # still in the narrative (Procedure column)

    if not kit.synthetic_available():
        return
    seen = 0
    for _name, nhs, size in kit.synthetic_cases():
        if size is not None:
            continue
        data = kit.synthetic_bundle(nhs, size)
        not_given = [
            e["resource"]
            for e in data["entry"]
            if e["resource"]["resourceType"] == "Immunization" and e["resource"]["notGiven"]
        ]
        if not not_given:
            continue
        root, _ = convert(data)
        negated = section(root, IMMUNIZATIONS).xpath(
            "cda:entry/cda:substanceAdministration[@negationInd='true']", namespaces=NS
        )
        assert len(negated) == len(not_given)
        for res, act in zip(not_given, negated, strict=True):
            procedure = next(
                x["valueCodeableConcept"]["coding"][0]["code"]
                for x in res["extension"]
                if x["url"].endswith("VaccinationProcedure-1")
            )
            codes = _material_code(act).xpath(".//@code", namespaces=NS)
            assert procedure not in codes
            assert codes == [res["vaccineCode"]["coding"][0]["code"]]
            seen += 1
    assert seen > 0


# ---- problems ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "abatement", "act_high", "obs_high"),
    [
        ("inactive", None, "UNK", "UNK"),
        ("resolved", None, "UNK", "UNK"),
        ("inactive", "2015-06", "201506", "201506"),
        ("active", None, None, None),
    ],
)
def test_problem_observation_high_for_ended_problems(
    status: str, abatement: str | None, act_high: str | None, obs_high: str | None
) -> None:
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": status,
        "code": cc("38341003", "Hypertension"),
        "onsetDateTime": "2010",
    }
    if abatement:
        cond["abatementDateTime"] = abatement
    root, _ = convert(bundle(cond))
    act = section(root, PROBLEMS).find("cda:entry/cda:act", NS)

    def high(el: etree._Element) -> str | None:
        found = el.find("cda:effectiveTime/cda:high", NS)
        if found is None:
            return None
        return str(found.get("value") or found.get("nullFlavor"))

    assert high(act) == act_high
    obs = act.find("cda:entryRelationship/cda:observation", NS)
    assert high(obs) == obs_high
    assert obs.find("cda:effectiveTime/cda:low", NS).get("value") == "2010"


# ---- the schematron ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hand_built_cases_validate(tmp_path: Path, validator_cache: Path, kit: Any) -> None:
    """The shapes above (value translations, allergen nullFlavor, narrative-only immunisation
    section, problem high nullFlavor) pass the CDA XSD and the C-CDA R2.1 schematron."""
    kit.require_shared()
    cases = {
        "allergens": bundle(
            allergy("a1", cc("241933001", "Peanut-induced anaphylaxis")),
            allergy(
                "a2",
                {
                    "coding": [
                        {"system": "urn:x-unknown", "code": "X1", "display": "Local"},
                        {"system": SCT, "code": "196461000000101", "display": "Transfer"},
                    ],
                    "text": "Dog allergy",
                },
                reaction=[{"manifestation": [cc("39579001", "Anaphylaxis")]}],
            ),
            allergy(
                "a3",
                cc("91935009", "Allergy to peanuts"),
                reaction=[{"substance": {"text": "Peanut"}}],
                clinicalStatus="resolved",
            ),
        ),
        "consent-only": bundle(
            observation(
                "o1", cc("268559007", "No consent for any immunization"), comment="Dissent"
            ),
            listing("1102181000000102", "Immunisations", ["Observation/o1"]),
        ),
        "problems": bundle(
            {
                "resourceType": "Condition",
                "id": "c1",
                "clinicalStatus": "resolved",
                "code": cc("38341003", "Hypertension"),
            }
        ),
    }
    files = []
    for name, data in cases.items():
        path = tmp_path / f"{name}.xml"
        path.write_bytes(convert_bundle(data, options=ConvertOptions(effective_time=WHEN)).ccd_xml)
        files.append(path)
    reports = kit.run_validator(files, validator_cache)
    for path in files:
        report = reports[path.name]
        messages = "\n".join(
            f"{m.get('id')}: {m.get('text', '')[:200]}" for m in report["messages"]
        )
        assert report["xsd_errors"] == 0, f"{path.name}: XSD errors\n{messages}"
        assert report["schematron_errors"] == 0, f"{path.name}: schematron errors\n{messages}"
