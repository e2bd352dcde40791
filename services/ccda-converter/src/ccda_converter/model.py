"""Public data types of the converter: options in, result (CCD + coverage report) out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DmdConcept:
    """What the NHS terminology server told us about one dm+d concept (enrichment input)."""

    code: str
    display: str = ""
    concept_class: str = ""  # VTM / VMP / AMP / VMPP / AMPP when known
    vmp_code: str = ""  # the VMP of an AMP
    vmp_display: str = ""
    route_code: str = ""
    route_display: str = ""
    strength: str = ""  # human strength text (from VPI), e.g. "500 mg"


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Per-conversion options. Every field has a safe default."""

    # OID for ClinicalDocument/id/@root; empty: the document id is a bare UUID root.
    document_id_root: str = ""
    # Document time (header effectiveTime, author time, serviceEvent high); default now (UTC).
    effective_time: dt.datetime | None = None
    title: str = "GP Connect summary record"
    # Intended recipient (the requesting organisation), shown in informationRecipient.
    recipient_organization_name: str = ""
    recipient_organization_id: str = ""
    # dm+d enrichment results keyed by dm+d/SNOMED code (see ccda_converter.dmd).
    dmd: Mapping[str, DmdConcept] = field(default_factory=dict)
    # Check every entry against the fhirclient 3.2.0 STU3 models (slow: about 0.7 ms per entry);
    # failures become warnings, the raw JSON is converted either way.
    validate_models: bool = False
    software_name: str = "xcagw ccda-converter"
    software_version: str = "0.1.0"


@dataclass(slots=True)
class CoverageCount:
    """How the resources of one type ended up in the document."""

    resource_type: str
    mapped: int = 0  # coded CDA entries
    narrative_only: int = 0  # narrative text only
    skipped: int = 0  # deliberately left out, each with a reason
    skip_reasons: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.mapped + self.narrative_only + self.skipped


# Resource types that carry clinical statements (the denominator of the coded ratio).
CLINICAL_TYPES = frozenset(
    {
        "AllergyIntolerance",
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "Immunization",
        "Observation",
        "DiagnosticReport",
        "Encounter",
        "Procedure",
        "ProcedureRequest",
        "ReferralRequest",
        "DocumentReference",
        "Flag",
        "FamilyMemberHistory",
        "CarePlan",
        "Appointment",
        "QuestionnaireResponse",
        "ClinicalImpression",
        "DetectedIssue",
        "RiskAssessment",
        "MedicationAdministration",
        "MedicationDispense",
        "DeviceRequest",
        "NutritionOrder",
        "Goal",
    }
)


@dataclass(slots=True)
class ConversionResult:
    """The CCD and how the record was carried into it."""

    ccd_xml: bytes
    document_id: str  # root or root^extension
    coverage: dict[str, CoverageCount]
    warnings: list[str]
    entry_count: int = 0

    @property
    def clinical_total(self) -> int:
        return sum(c.total for t, c in self.coverage.items() if t in CLINICAL_TYPES)

    @property
    def clinical_mapped(self) -> int:
        return sum(c.mapped for t, c in self.coverage.items() if t in CLINICAL_TYPES)

    @property
    def coded_ratio(self) -> float:
        """Share of clinical resources carried as coded entries (1.0 when there are none)."""
        total = self.clinical_total
        return 1.0 if total == 0 else self.clinical_mapped / total

    def coverage_lines(self) -> list[str]:
        """A human coverage report (for the CLI)."""
        lines = []
        for rtype in sorted(self.coverage):
            c = self.coverage[rtype]
            line = (
                f"{rtype:<22} mapped={c.mapped:<5} narrative_only={c.narrative_only:<4} "
                f"skipped={c.skipped}"
            )
            if c.skip_reasons:
                line += "  (" + "; ".join(sorted(set(c.skip_reasons))) + ")"
            lines.append(line)
        lines.append(
            f"clinical resources: {self.clinical_mapped}/{self.clinical_total} coded "
            f"({self.coded_ratio:.1%})"
        )
        return lines
