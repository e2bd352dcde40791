"""Allergies and Intolerances Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.6.1.

AllergyIntolerance from the "Allergies and adverse reactions" List and the "Ended allergies" List
(resolved allergies are contained there). Allergy Concern Act 4.30 wraps an Allergy - Intolerance
Observation 4.7; reactions 4.9 with severity 4.8; criticality 4.145. A coded "no known allergy"
stays an assertion (negationInd, ConceptMap-FC-NoKnownAllergies), as does a List whose
emptyReason is nil-known; "no content recorded" is not.

The playingEntity code is the allergen (Substance-Reactant for Intolerance, CONF:1098-7421), but
GP systems usually code the allergy itself ("Allergy to seafood", "Peanut-induced anaphylaxis",
the generic "Transfer-degraded drug allergy" with the allergen only in the text). Only a code that
is recognisably a substance or product goes there; otherwise the allergen is the narrative text
(nullFlavor OTH) and the allergy's own code is kept as a translation of the observation value.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import (
    Resource,
    as_list,
    ext_value,
    extension,
    notes,
    sub_extension,
    text_of,
)
from ccda_converter.codes import (
    ACT_CLASS,
    ACT_CODE,
    CODE_SYSTEMS,
    DMD_NAME,
    LOINC,
    OBS_VALUE,
    SNOMED,
    Code,
    Concept,
    concept,
)
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.lists import ENDED_ALLERGIES, empty_reason_code, list_code
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.common import comment
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="allergies",
    root="2.16.840.1.113883.10.20.22.2.6.1",
    extension="2015-08-01",
    loinc="48765-2",
    loinc_display="Allergies and adverse reactions Document",
    title="Allergies and adverse reactions",
    entries_required=True,
    prefix="alg",
)

# ConceptMap-FC-NoKnownAllergies: NKA code -> Allergy and Intolerance Type value (negated).
NO_KNOWN: Final[dict[str, tuple[str, str]]] = {
    "716186003": ("419199007", "Allergy to substance"),
    "409137002": ("416098002", "Drug allergy"),
    "429625007": ("414285001", "Food allergy"),
    "428607008": ("419199007", "Allergy to substance"),
    "1103281000000108": ("419199007", "Allergy to substance"),
}
# ConceptMap-FC-AllergyIntoleranceCategory x Type -> Allergy and Intolerance Type (SNOMED).
TYPE_MAP: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("medication", "allergy"): ("416098002", "Drug allergy"),
    ("medication", "intolerance"): ("59037007", "Drug intolerance"),
    ("medication", ""): ("419511003", "Propensity to adverse reactions to drug"),
    ("food", "allergy"): ("414285001", "Food allergy"),
    ("food", "intolerance"): ("235719002", "Food intolerance"),
    ("food", ""): ("418471000", "Propensity to adverse reactions to food"),
    ("environment", "allergy"): ("419199007", "Allergy to substance"),
    ("environment", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("environment", ""): ("418038007", "Propensity to adverse reactions to substance"),
    ("biologic", "allergy"): ("419199007", "Allergy to substance"),
    ("biologic", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("biologic", ""): ("418038007", "Propensity to adverse reactions to substance"),
    ("", "allergy"): ("419199007", "Allergy to substance"),
    ("", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("", ""): ("420134006", "Propensity to adverse reactions"),
}
SEVERITY: Final = {
    "mild": ("255604002", "Mild"),
    "moderate": ("6736007", "Moderate"),
    "severe": ("24484000", "Severe"),
}
# ConceptMap-FC-AllergyStatus: STU3 AllergyIntolerance.clinicalStatus -> Allergy Status
# Observation value (value set Allergy Clinical Status 2.16.840.1.113762.1.4.1099.29).
CLINICAL_STATUS: Final = {
    "active": ("55561003", "Active"),
    "inactive": ("73425007", "Inactive"),
    "resolved": ("413322009", "Problem Resolved"),
}
CRITICALITY: Final = {
    "high": ("CRITH", "High criticality"),
    "low": ("CRITL", "Low criticality"),
    "unable-to-assess": ("CRITU", "Unable to assess criticality"),
}
# Drug dictionaries: any of their codes names a medicinal product, and so does a SNOMED coding
# sent beside one (GP systems send e.g. a Gemscript code and its dm+d equivalent together).
DRUG_DICTIONARIES: Final = frozenset(
    CODE_SYSTEMS[uri][0]
    for uri in (
        "https://fhir.hl7.org.uk/Id/emis-drug-codes",
        "https://fhir.hl7.org.uk/Id/multilex-drug-codes",
        "https://fhir.hl7.org.uk/Id/resipuk-gemscript-drug-codes",
    )
)
# SNOMED CT semantic tags of the substance and product hierarchies, when a display is a fully
# specified name ("Sesame oil (substance)"). Without a terminology server these tags, the dm+d
# namespace and the drug dictionaries are the only reliable signs of a substance: a disorder such
# as "Allergy to peanut" must not be sent as the allergen.
REACTANT_TAGS: Final = (
    "(substance)",
    "(product)",
    "(medicinal product)",
    "(medicinal product form)",
    "(clinical drug)",
    "(real clinical drug)",
)
HEADERS: Final = (
    "Substance",
    "Type",
    "Reactions",
    "Criticality",
    "Status",
    "Onset",
    "Recorded",
    "Ended",
    "Notes",
)


def _category(data: dict[str, object]) -> str:
    cats = [c.strip() for c in as_list(data.get("category")) if isinstance(c, str)]
    return cats[0] if cats else ""


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    active: list[Resource] = []
    ended: list[Resource] = []
    seen: set[int] = set()
    nil_known = False
    for lst in ctx.idx.of_type("List"):
        code = list_code(lst)
        if code not in ("886921000000105", ENDED_ALLERGIES):
            continue
        if empty_reason_code(lst) == "nil-known" and code != ENDED_ALLERGIES:
            nil_known = True
        for entry in as_list(lst.data.get("entry")):
            item = ctx.idx.resolve(entry.get("item") if isinstance(entry, dict) else None, lst)
            if item is not None and item.rtype == "AllergyIntolerance" and id(item) not in seen:
                seen.add(id(item))
                (ended if code == ENDED_ALLERGIES else active).append(item)
    for res in ctx.idx.of_type("AllergyIntolerance"):
        if id(res) not in seen:
            seen.add(id(res))
            (ended if text_of(res.data.get("clinicalStatus")) == "resolved" else active).append(res)
    for res in active + ended:
        try:
            _allergy(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
            ctx.warn(f"{res.key}: allergy not converted ({type(exc).__name__})")
            table.row([f"Allergy record that could not be converted: {res.key}"])
            ctx.narrative(res)
    if nil_known and not any(_is_nka(r) for r in active):
        _nka_from_list(ctx, section, table)
    return section.finish("No information about allergies and adverse reactions is available.")


def _is_nka(res: Resource) -> bool:
    return any(c.code in NO_KNOWN for c in concept(res.data.get("code")).codes)


def _allergy(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    substance = ctx.concept(data.get("code"))
    nka = next((NO_KNOWN[c.code] for c in substance.codes if c.code in NO_KNOWN), None)
    category = _category(data)
    atype = text_of(data.get("type"))
    status = CLINICAL_STATUS.get(text_of(data.get("clinicalStatus")))
    clinical = text_of(data.get("clinicalStatus")) or "active"
    end_ext = extension(data, "Extension-CareConnect-GPC-AllergyIntoleranceEnd-1")
    end_date = ext_value(sub_extension(end_ext, "endDate"))
    end_reason = text_of(ext_value(sub_extension(end_ext, "reasonEnded")))
    resolved = clinical in ("resolved", "inactive") or end_ext is not None
    value = nka or TYPE_MAP.get((category, atype), TYPE_MAP[("", "")])
    reactions = [r for r in as_list(data.get("reaction")) if isinstance(r, dict)]
    reaction_text = []
    for r in reactions:
        manifest = ", ".join(
            concept(m).text for m in as_list(r.get("manifestation")) if concept(m).text
        )
        sev = text_of(r.get("severity"))
        agent = concept(r.get("substance")).text
        reaction_text.append(
            manifest + (f" ({sev})" if sev else "") + (f"; substance: {agent}" if agent else "")
        )
    criticality = text_of(data.get("criticality"))
    note_texts = notes(data)
    if end_reason:
        note_texts.append(f"Reason ended: {end_reason}")
    name = substance.text or "Unnamed substance"
    if nka:
        name = substance.text or "No known allergy"
    row = table.row(
        [
            name,
            value[1],
            reaction_text,
            CRITICALITY.get(criticality, ("", criticality))[1] if criticality else "",
            "Resolved" if resolved else ("No known allergy (asserted)" if nka else "Active"),
            display_date(data.get("onsetDateTime")),
            display_date(data.get("assertedDate")),
            display_date(end_date) if end_date else "",
            note_texts,
        ],
        (8,) if note_texts else (),
    )
    onset = ctx.ts(data.get("onsetDateTime"))
    asserted = ctx.ts(data.get("assertedDate"))
    ended = ctx.ts(end_date) if end_date else None

    low = asserted or onset
    recorder = data.get("recorder") or data.get("asserter")
    _entry, act, obs, value_el, entity, participant = section.stamp(
        _allergy_template(
            bool(low), bool(ended), resolved, bool(onset), nka is not None, status is not None
        ),
        {
            "concern_id": ctx.entry_uid(res, "#concern"),
            "ref": "#" + row.id,
            "low": low,
            "high": ended,
            "id": ctx.entry_uid(res),
            "onset": onset,
            "obs_high": ended,
            "value": value[0],
            "value_name": value[1],
            "name_ref": "#" + row.name_id,
            "status": status[0] if status else None,
            "status_name": status[1] if status else None,
        },
    )
    ctx.author(act, recorder, asserted, res, before=act[-1])
    ctx.author(obs, recorder, asserted, res, before=participant)
    if not nka:
        _reactant(ctx, substance, reactions, value_el, entity, row.name_id)
    for i, r in enumerate(reactions):
        _reaction(ctx, obs, res, r, i, row.id)
    if criticality in CRITICALITY:
        crit = CRITICALITY[criticality]
        _CRITICALITY.stamp(obs, {"code": crit[0], "name": crit[1]})
    if note_texts:
        comment(obs, ctx, row, 8)
    ctx.mapped(res)


# playingEntity/code when no coding is the allergen: nullFlavor OTH and the narrative text.
_NO_CODE: Final = Concept([], [], "", None)


def _is_reactant(ctx: Context, code: Code, dictionary: bool) -> bool:
    """True when a coding names a substance or a medicinal product (conservative: see
    DRUG_DICTIONARIES and REACTANT_TAGS; a code the dm+d enrichment knows is a dm+d concept)."""
    if code.system_name == DMD_NAME or code.oid in DRUG_DICTIONARIES:
        return True
    if code.oid != SNOMED:
        return False
    return (
        dictionary or code.code in ctx.options.dmd or code.display.lower().endswith(REACTANT_TAGS)
    )


def _reactant(
    ctx: Context,
    substance: Concept,
    reactions: list[dict[str, object]],
    value: cda.Element,
    entity: cda.Element,
    name_ref: str,
) -> None:
    """playingEntity/code (CONF:1098-7421, Substance-Reactant for Intolerance): the codings of
    AllergyIntolerance.code that name a substance or product; else the first
    reaction.substance; else nullFlavor OTH with the allergen's narrative text. The allergy
    codings that are not the allergen become translations of the observation value (the
    Allergy and Intolerance Type: CD allows translations, CONF:1098-7390 constrains @code)."""
    dictionary = any(c.oid in DRUG_DICTIONARIES for c in substance.codes)
    reactant = [c for c in substance.codes if _is_reactant(ctx, c, dictionary)]
    if reactant:
        rest = [c for c in substance.codes if c not in reactant]
        if rest:
            substance = Concept(reactant, substance.unknown, substance.text, None)
        cda.cd(entity, "code", substance, ref=name_ref)
        _translations(value, rest, [])
        return
    agent = next(
        (
            c
            for c in (concept(r.get("substance")) for r in reactions)
            if c.codes or c.unknown or c.text
        ),
        None,
    )
    if agent is not None:
        # reaction.substance is the agent by definition (STU3); its own text is its originalText.
        cda.cd(entity, "code", agent)
    else:
        cda.cd(entity, "code", _NO_CODE, ref=name_ref, force_null="OTH")
    _translations(value, substance.codes, substance.unknown)


def _translations(
    parent: cda.Element, codes: list[Code], unknown: list[tuple[str, str, str]]
) -> None:
    """<translation>s after the value's originalText (CD content order), written as cda.cd
    writes them."""
    for c in codes:
        attrib = {"code": c.code, "codeSystem": c.oid, "codeSystemName": c.system_name}
        if c.display:
            attrib["displayName"] = c.display
        cda.fixed(parent, "translation", attrib)
    for system, code_value, display in unknown:
        # No OID for this system: never an empty @codeSystem; keep the coding readable instead.
        tr = cda.sub(parent, "translation", {"nullFlavor": "OTH"})
        cda.text_el(tr, "originalText", f"{display or code_value} [{code_value}] ({system})")


def _reaction(
    ctx: Context, obs: cda.Element, res: Resource, reaction: dict[str, object], i: int, ref: str
) -> None:
    manifestations = [concept(m) for m in as_list(reaction.get("manifestation"))]
    severity = text_of(reaction.get("severity"))
    onset = ctx.ts(reaction.get("onset"))
    sev = SEVERITY.get(severity)
    for j, manifest in enumerate(manifestations or [Concept([], [], "", None)]):
        _rel, robs = _reaction_template(bool(onset), sev is not None).stamp(
            obs,
            {
                "id": ctx.entry_uid(res, f"#reaction{i}.{j}"),
                "ref": "#" + ref,
                "onset": onset,
                "sev": sev[0] if sev else None,
                "sev_name": sev[1] if sev else None,
            },
        )
        # The manifestation goes before the severity relationship (the last child) if any.
        cda.cd(robs, "value", manifest, xsi_type="CD", before=robs[-1] if sev else None)


@functools.cache
def _allergy_template(
    low: bool, high: bool, resolved: bool, onset: bool, nka: bool, status: bool
) -> Template:
    """Allergy Concern Act (4.30) wrapping an Allergy - Intolerance Observation (4.7). Authors go
    before the act's last child and before the observation's participant; the allergen code
    into playingEntity and translations into the value (when not NKA, see ``_reactant``).
    CONF:1198-7504/10085: an active concern needs low; a completed one needs high.
    CONF:1098-31538: exactly one low (UNK when the onset is not recorded). ``status``: an
    Allergy Status Observation (4.28) for the FHIR clinicalStatus (CONF:1098-31143/31144/31145/
    31146: entryRelationship SUBJ, inversionInd true)."""
    value = cda.p_code("$value", SNOMED, "$value_name", "SNOMED CT", local="value", xsi_type="CD")
    value.set("tpl-as", "value")
    entity = E.playingEntity({"classCode": "MMAT", "tpl-as": "entity"})
    if nka:
        value.append(E.originalText(E.reference(value="$name_ref")))
        entity.append(E.code(nullFlavor="NA"))
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.act(
                {"classCode": "ACT", "moodCode": "EVN", "tpl-as": "act"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.30", "2015-08-01"),
                E.id(root="$concern_id"),
                cda.p_code("CONC", ACT_CLASS, "Concern", "HL7ActClass"),
                cda.p_text_ref(),
                E.statusCode(code="completed" if resolved else "active"),
                cda.p_ivl(low, high, high_null="UNK" if resolved else None),
                E.entryRelationship(
                    {"typeCode": "SUBJ"},
                    E.observation(
                        {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"}
                        | ({"negationInd": "true"} if nka else {}),
                        *cda.p_templates("2.16.840.1.113883.10.20.22.4.7", "2014-06-09"),
                        E.id(root="$id"),
                        cda.p_code("ASSERTION", ACT_CODE, "Assertion", "HL7ActCode"),
                        cda.p_text_ref(),
                        E.statusCode(code="completed"),
                        cda.p_ivl(onset, high and resolved, low_slot="onset", high_slot="obs_high"),
                        value,
                        E.participant(
                            {"typeCode": "CSM", "tpl-as": "participant"},
                            E.participantRole({"classCode": "MANU"}, entity),
                        ),
                        *([_p_allergy_status()] if status else []),
                    ),
                ),
            ),
        ),
        handles=("act", "obs", "value", "entity", "participant"),
    )


def _p_allergy_status() -> cda.Element:
    """Allergy Status Observation (4.28, 2019-06-20 with the R1.1 root, CONF:1198-7317,
    1198-32962): LOINC 33999-4 Status, statusCode completed, the status as CE (CONF:1198-7318 to
    1198-7322, 1198-19087, 1198-19131)."""
    return E.entryRelationship(
        {"typeCode": "SUBJ", "inversionInd": "true"},
        E.observation(
            {"classCode": "OBS", "moodCode": "EVN"},
            *cda.p_templates("2.16.840.1.113883.10.20.22.4.28", "2019-06-20"),
            cda.p_code("33999-4", LOINC, "Status", "LOINC"),
            E.statusCode(code="completed"),
            cda.p_code(
                "$status", SNOMED, "$status_name", "SNOMED CT", local="value", xsi_type="CE"
            ),
        ),
    )


@functools.cache
def _reaction_template(onset: bool, severity: bool) -> Template:
    """Reaction Observation (4.9) with its Severity Observation (4.8)."""
    parts = [
        *cda.p_templates("2.16.840.1.113883.10.20.22.4.9", "2014-06-09"),
        E.id(root="$id"),
        cda.p_code("ASSERTION", ACT_CODE, "Assertion", "HL7ActCode"),
        cda.p_text_ref(),
        E.statusCode(code="completed"),
    ]
    if onset:
        parts.append(cda.p_ivl(True, False, low_slot="onset"))
    if severity:
        parts.append(
            E.entryRelationship(
                {"typeCode": "SUBJ", "inversionInd": "true"},
                E.observation(
                    {"classCode": "OBS", "moodCode": "EVN"},
                    *cda.p_templates("2.16.840.1.113883.10.20.22.4.8", "2014-06-09"),
                    cda.p_code("SEV", ACT_CODE, "Severity observation", "HL7ActCode"),
                    E.statusCode(code="completed"),
                    cda.p_code(
                        "$sev", SNOMED, "$sev_name", "SNOMED CT", local="value", xsi_type="CD"
                    ),
                ),
            )
        )
    return Template(
        E.entryRelationship(
            {"typeCode": "MFST", "inversionInd": "true"},
            E.observation({"classCode": "OBS", "moodCode": "EVN", "tpl-as": "robs"}, *parts),
        ),
        handles=("robs",),
    )


# Criticality Observation (4.145).
_CRITICALITY: Final = Template(
    E.entryRelationship(
        {"typeCode": "SUBJ", "inversionInd": "true"},
        E.observation(
            {"classCode": "OBS", "moodCode": "EVN"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.145"),
            cda.p_code("82606-5", "2.16.840.1.113883.6.1", "Criticality", "LOINC"),
            E.statusCode(code="completed"),
            cda.p_code(
                "$code", OBS_VALUE, "$name", "HL7ObservationValue", local="value", xsi_type="CD"
            ),
        ),
    )
)


def _nka_from_list(ctx: Context, section: Section, table: Table) -> None:
    """emptyReason nil-known on the allergies List is the practice asserting "none known"."""
    row = table.row(
        [
            "No known allergies",
            "Allergy to substance",
            "",
            "",
            "None known (List emptyReason nil-known)",
            "",
            "",
            "",
            "",
        ]
    )
    entry = section.entry()
    act = cda.fixed(entry, "act", {"classCode": "ACT", "moodCode": "EVN"})
    cda.templates(act, "2.16.840.1.113883.10.20.22.4.30", "2015-08-01")
    cda.ii(act, ctx.uid("allergies#nil-known#concern"))
    cda.code(act, "CONC", ACT_CLASS, "Concern", "HL7ActClass")
    cda.text_ref(act, row.id)
    cda.status(act, "active")
    cda.ivl_ts(act, None)
    rel = cda.fixed(act, "entryRelationship", {"typeCode": "SUBJ"})
    obs = cda.fixed(
        rel, "observation", {"classCode": "OBS", "moodCode": "EVN", "negationInd": "true"}
    )
    cda.templates(obs, "2.16.840.1.113883.10.20.22.4.7", "2014-06-09")
    cda.ii(obs, ctx.uid("allergies#nil-known"))
    cda.code(obs, "ASSERTION", ACT_CODE, "Assertion", "HL7ActCode")
    cda.text_ref(obs, row.id)
    cda.status(obs, "completed")
    cda.ivl_ts(obs, None)
    val = cda.code(
        obs, "419199007", SNOMED, "Allergy to substance", "SNOMED CT", local="value", xsi_type="CD"
    )
    ot = cda.sub(val, "originalText")
    cda.sub(ot, "reference", {"value": "#" + row.name_id})
    part = cda.fixed(obs, "participant", {"typeCode": "CSM"})
    role = cda.fixed(part, "participantRole", {"classCode": "MANU"})
    entity = cda.fixed(role, "playingEntity", {"classCode": "MMAT"})
    cda.fixed(entity, "code", {"nullFlavor": "NA"})
