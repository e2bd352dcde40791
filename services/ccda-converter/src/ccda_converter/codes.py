"""Code systems: the FHIR URI -> CDA OID registry and CodeableConcept normalisation.

Values from ../shared/docs/ccda-requirements.md section 4 (HL7 C-CDA on FHIR mappingGuidance and the
NHS GP2GP adaptor). One registry for the whole converter; an unknown system never yields an empty
@codeSystem (a lesson from Xhuma): such codings become nullFlavor translations with original text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

SNOMED: Final = "2.16.840.1.113883.6.96"
LOINC: Final = "2.16.840.1.113883.6.1"
RXNORM: Final = "2.16.840.1.113883.6.88"
CVX: Final = "2.16.840.1.113883.12.292"
UCUM: Final = "2.16.840.1.113883.6.8"
ACT_CODE: Final = "2.16.840.1.113883.5.4"
ACT_CLASS: Final = "2.16.840.1.113883.5.6"
NULL_FLAVOR: Final = "2.16.840.1.113883.5.1008"
ADMIN_GENDER: Final = "2.16.840.1.113883.5.1"
CONFIDENTIALITY: Final = "2.16.840.1.113883.5.25"
OBS_INTERPRETATION: Final = "2.16.840.1.113883.5.83"
OBS_VALUE: Final = "2.16.840.1.113883.5.1063"

NHS_NUMBER_OID: Final = "2.16.840.1.113883.2.1.4.1"
ODS_ORG_OID: Final = "2.16.840.1.113883.2.1.3.2.4.19.1"
ODS_SITE_OID: Final = "2.16.840.1.113883.2.1.3.2.4.19.2"
SDS_USER_OID: Final = "1.2.826.0.1285.0.2.0.65"
SDS_ROLE_PROFILE_OID: Final = "1.2.826.0.1285.0.2.0.67"
GMC_OID: Final = "2.16.840.1.113883.2.1.3.2.4.16.63"
GMP_OID: Final = "2.16.840.1.113883.2.1.3.2.4.16.62"
# mappingGuidance: an identifier system with no OID -> root urn:ietf:rfc:3986,
# extension system/value.
RFC3986_OID: Final = "2.16.840.1.113883.4.873"

SNOMED_URI: Final = "http://snomed.info/sct"
DMD_NAME: Final = "SNOMED CT UK Drug Extension (dm+d)"

# FHIR code system URI -> (OID, human codeSystemName). codeSystemName is a name, never the URI.
CODE_SYSTEMS: Final[dict[str, tuple[str, str]]] = {
    SNOMED_URI: (SNOMED, "SNOMED CT"),
    "https://snomed.info/sct": (SNOMED, "SNOMED CT"),
    # dm+d ids are SNOMED CT UK Drug Extension concept ids: no separate dm+d OID is in CDA use.
    "https://dmd.nhs.uk": (SNOMED, DMD_NAME),
    "http://dmd.nhs.uk": (SNOMED, DMD_NAME),
    "http://loinc.org": (LOINC, "LOINC"),
    "http://www.nlm.nih.gov/research/umls/rxnorm": (RXNORM, "RxNorm"),
    "http://hl7.org/fhir/sid/cvx": (CVX, "CVX"),
    "http://hl7.org/fhir/sid/icd-10": ("2.16.840.1.113883.6.3", "ICD-10"),
    "http://hl7.org/fhir/sid/icd-10-uk": ("2.16.840.1.113883.6.3", "ICD-10"),
    "http://unitsofmeasure.org": (UCUM, "UCUM"),
    "http://read.info/readv2": ("2.16.840.1.113883.2.1.6.2", "Read Codes v2"),
    "http://read.info/ctv3": ("2.16.840.1.113883.2.1.3.2.4.14", "Read Codes CTV3"),
    "https://fhir.hl7.org.uk/Id/emis-drug-codes": ("2.16.840.1.113883.2.1.6.9", "EMIS drug codes"),
    "https://fhir.hl7.org.uk/Id/egton-codes": ("2.16.840.1.113883.2.1.6.3", "Egton codes"),
    "https://fhir.hl7.org.uk/Id/multilex-drug-codes": ("2.16.840.1.113883.2.1.6.4", "Multilex"),
    "https://fhir.hl7.org.uk/Id/resipuk-gemscript-drug-codes": (
        "2.16.840.1.113883.2.1.6.15",
        "Gemscript",
    ),
    "http://hl7.org/fhir/v3/ActCode": (ACT_CODE, "HL7 ActCode"),
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": (ACT_CODE, "HL7 ActCode"),
    "http://hl7.org/fhir/v3/ObservationInterpretation": (OBS_INTERPRETATION, "HL7 Interpretation"),
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation": (
        OBS_INTERPRETATION,
        "HL7 Interpretation",
    ),
    "http://hl7.org/fhir/v2/0078": (OBS_INTERPRETATION, "HL7 Interpretation"),
    "http://terminology.hl7.org/CodeSystem/v2-0078": (OBS_INTERPRETATION, "HL7 Interpretation"),
}

NULL_FLAVOR_SYSTEMS: Final = frozenset(
    {
        "http://hl7.org/fhir/v3/NullFlavor",
        "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
    }
)
VALID_NULL_FLAVORS: Final = frozenset(
    {"NI", "NA", "UNK", "ASKU", "NAV", "NASK", "TRC", "MSK", "OTH", "PINF", "NINF", "NP"}
)

# FHIR identifier system -> OID (mappingGuidance "known system -> OID").
IDENTIFIER_SYSTEMS: Final[dict[str, str]] = {
    "https://fhir.nhs.uk/Id/nhs-number": NHS_NUMBER_OID,
    "https://fhir.nhs.uk/Id/ods-organization-code": ODS_ORG_OID,
    "https://fhir.nhs.uk/Id/ods-site-code": ODS_SITE_OID,
    "https://fhir.nhs.uk/Id/sds-user-id": SDS_USER_OID,
    "https://fhir.nhs.uk/Id/sds-role-profile-id": SDS_ROLE_PROFILE_OID,
    "https://fhir.hl7.org.uk/Id/gmc-number": GMC_OID,
    "https://fhir.hl7.org.uk/Id/gmp-number": GMP_OID,
    "http://visionhealth.co.uk/Id/gmp-code": GMP_OID,
}


class Code(NamedTuple):
    """One usable coding: a code in a system with a known OID (a tuple: cheap to build and to
    hash, as the converter creates one per coding)."""

    code: str
    oid: str
    system_name: str
    display: str


@dataclass(slots=True)
class Concept:
    """A CodeableConcept split into what CDA needs. Shared through the per-conversion memo:
    never mutate one."""

    codes: list[Code]
    unknown: list[tuple[str, str, str]]  # (system, code, display) with no OID
    text: str
    null_flavor: str | None  # a coding from the v3 NullFlavor system
    _signature: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def signature(self) -> tuple[Any, ...]:
        """Codes, unknown codings and nullFlavor as one hashable key (computed once)."""
        sig = self._signature
        if sig is None:
            sig = self._signature = (self.null_flavor, tuple(self.codes), tuple(self.unknown))
        return sig


# Per-conversion memo of normalised CodeableConcepts by object identity (the same JSON object is
# read by classification, narrative and entry). Holding the object keeps its id from being reused;
# the memo lives only while a conversion runs (``concept_memo``), so nothing outlives it.
_MEMO: ContextVar[dict[int, tuple[Any, Concept]] | None] = ContextVar("concept_memo", default=None)


@contextmanager
def concept_memo() -> Iterator[None]:
    """Memoise ``concept`` for the duration of one conversion (per thread / context)."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _clean(value: Any) -> str:
    # Real GP Connect data has codes with leading/trailing spaces ('394595002 ', ' 86290005').
    return value.strip() if isinstance(value, str) else ""


def _sct_name(code: str) -> str:
    # SCTID: ...<namespace 7 digits><partition 2 digits><check digit>; partition "10" = extension
    # concept, namespace 1000001 = UK drug extension (dm+d).
    if len(code) > 10 and code[-3:-1] == "10" and code[-10:-3] == "1000001":
        return DMD_NAME
    return "SNOMED CT"


def system_oid(uri: str) -> tuple[str, str] | None:
    """(OID, name) for a FHIR system URI; ``urn:oid:`` systems map to their OID."""
    uri = uri.strip()
    found = CODE_SYSTEMS.get(uri)
    if found is not None:
        return found
    if uri.startswith("urn:oid:"):
        oid = uri[8:]
        return (oid, oid) if _is_oid(oid) else None
    return None


def _is_oid(text: str) -> bool:
    parts = text.split(".")
    return len(parts) >= 2 and all(
        p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts
    )


def is_oid(text: str) -> bool:
    """True for a syntactically valid OID (CDA II.root)."""
    return bool(text) and _is_oid(text)


def concept(cc: Any) -> Concept:
    """Normalise a CodeableConcept (tolerating junk shapes) into codes, text and nullFlavor."""
    if not isinstance(cc, dict):
        return Concept([], [], "", None)
    memo = _MEMO.get()
    if memo is not None:
        hit = memo.get(id(cc))
        if hit is not None and hit[0] is cc:
            return hit[1]
    value = _concept(cc)
    if memo is not None:
        memo[id(cc)] = (cc, value)
    return value


def _concept(cc: dict[str, Any]) -> Concept:
    codes: list[Code] = []
    unknown: list[tuple[str, str, str]] = []
    null_flavor: str | None = None
    text = cc.get("text")
    text = text.strip() if isinstance(text, str) else ""
    raw = cc.get("coding")
    if isinstance(raw, list):
        for coding in raw:
            if not isinstance(coding, dict):
                continue
            key = (coding.get("system"), coding.get("code"), coding.get("display"))
            try:
                found = _CODINGS.get(key)
            except TypeError:  # a JSON object or array where a string belongs: not cacheable
                found = _coding(*key)
            if found is None:
                found = _coding(*key)
                if len(_CODINGS) >= _CODINGS_LIMIT:
                    _CODINGS.clear()
                _CODINGS[key] = found
            kind, value, display = found
            if kind == _CODE:
                codes.append(value)
                continue
            if kind == _UNKNOWN:
                unknown.append(value)
                continue
            if kind == _NULL_FLAVOR and value:
                null_flavor = value
            if display and not text:
                text = display
    if not text:
        for c in codes:
            if c.display:
                text = c.display
                break
    if not text:
        # A coding from a system with no OID still names the concept for the reader: GP Connect
        # CareConnect code systems (PrescriptionType-1 "Acute"/"Repeat", PrescribingAgency-1, ...)
        # carry only a code and a display.
        for _system, _code, display in unknown:
            if display:
                text = display
                break
    return Concept(codes, unknown, text, null_flavor)


_CODE: Final = 0
_UNKNOWN: Final = 1
_NULL_FLAVOR: Final = 2
_NO_CODE: Final = 3


def _coding(system: Any, code: Any, display: Any) -> tuple[int, Any, str]:
    """What one Coding contributes: (kind, Code / unknown triple / nullFlavor, display)."""
    # Real GP Connect data has codes with leading/trailing spaces ('394595002 ').
    system = system.strip() if isinstance(system, str) else ""
    code = code.strip() if isinstance(code, str) else ""
    display = display.strip() if isinstance(display, str) else ""
    if system in NULL_FLAVOR_SYSTEMS:
        return (_NULL_FLAVOR, code if code in VALID_NULL_FLAVORS else None, display)
    if not code:
        return (_NO_CODE, None, display)
    found = CODE_SYSTEMS.get(system) or system_oid(system)
    if found is None:
        return (_UNKNOWN, (system, code, display), display)
    oid, name = found
    if oid == SNOMED and name == "SNOMED CT":
        name = _sct_name(code)
    return (_CODE, Code(code, oid, name, display), display)


# Normalised codings by their raw (system, code, display): records and GP systems repeat the same
# codings over and over. Process-wide and bounded (cleared when full); values are immutable.
_CODINGS: dict[tuple[Any, Any, Any], tuple[int, Any, str]] = {}
_CODINGS_LIMIT: Final = 16384


def primary(c: Concept, prefer: tuple[str, ...] = (SNOMED,)) -> Code | None:
    """SNOMED first (medplum / GP2GP rule), then any coding with a known OID."""
    for oid in prefer:
        for code in c.codes:
            if code.oid == oid:
                return code
    return c.codes[0] if c.codes else None


def first_snomed(cc: Any) -> str:
    """The first SNOMED code of a CodeableConcept, or ''."""
    if isinstance(cc, dict):
        raw = cc.get("coding")
        if isinstance(raw, list):
            for coding in raw:
                if isinstance(coding, dict) and _clean(coding.get("system")) in (
                    SNOMED_URI,
                    "https://dmd.nhs.uk",
                    "http://dmd.nhs.uk",
                ):
                    code = _clean(coding.get("code"))
                    if code:
                        return code
    return ""


def all_codes(cc: Any) -> set[str]:
    """Every code string in a CodeableConcept (any system)."""
    out: set[str] = set()
    if isinstance(cc, dict):
        raw = cc.get("coding")
        if isinstance(raw, list):
            for coding in raw:
                if isinstance(coding, dict):
                    code = _clean(coding.get("code"))
                    if code:
                        out.add(code)
    return out


def label(cc: Any) -> str:
    """Human text for a CodeableConcept: text, else the first display (of any system), else the
    first code."""
    c = concept(cc)
    if c.text:
        return c.text
    if c.codes:
        return c.codes[0].code
    if c.unknown:
        return c.unknown[0][2] or c.unknown[0][1]
    return ""
