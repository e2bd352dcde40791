"""The pure conversion core: GP Connect STU3 structured-record Bundle -> C-CDA R2.1 CCD.

Synchronous and CPU-bound by design (no I/O): callers run it in an executor. dm+d enrichment is
looked up beforehand (ccda_converter.dmd) and passed in through ConvertOptions.dmd.
"""

from __future__ import annotations

import datetime as dt
import gc
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lxml import etree

from ccda_converter import bundle as bundle_mod
from ccda_converter import cda, classify, header, lists
from ccda_converter.bundle import BundleError
from ccda_converter.codes import concept_memo, is_oid
from ccda_converter.context import Context
from ccda_converter.dates import now_ts
from ccda_converter.model import ConversionResult, ConvertOptions, CoverageCount, DmdConcept
from ccda_converter.sections import (
    allergies,
    encounters,
    immunizations,
    medications,
    notes,
    plan,
    problems,
    procedures,
    results,
    social,
    vitals,
)
from ccda_converter.sections.base import Section, SectionSpec

__all__ = [
    "BundleError",
    "ConversionResult",
    "ConvertOptions",
    "CoverageCount",
    "DmdConcept",
    "convert_bundle",
]

SUPPORTING = ("Patient", "Organization", "Practitioner", "PractitionerRole", "Location")


def convert_bundle(
    bundle: dict[str, Any] | bytes | str, *, options: ConvertOptions | None = None
) -> ConversionResult:
    """Convert a GP Connect Access Record Structured Bundle to a CCD.

    Raises BundleError only when the input is not a FHIR Bundle at all; odd entries, dangling
    references and vendor quirks become warnings, narrative or skipped-with-reason coverage."""
    options = options or ConvertOptions()
    if options.document_id_root and not is_oid(options.document_id_root):
        raise BundleError(f"document_id_root {options.document_id_root!r} is not an OID")
    with _gc_paused(), concept_memo():
        return _convert(bundle_mod.load(bundle), options)


# The cyclic GC is paused while a conversion runs: reference counting frees what a conversion
# discards, but the tens of thousands of short-lived objects it allocates would trigger full
# collections that traverse the whole input bundle again and again (measured 2-12 % of the time of
# a 10,000-entry record). Anything cyclic is collected once it is re-enabled. A counter keeps
# concurrent conversions (executor threads) from re-enabling it early; it is only re-enabled if it
# was enabled before.
_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    global _gc_pausers, _gc_was_enabled  # noqa: PLW0603 - process-wide by nature
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _convert(data: dict[str, Any], options: ConvertOptions) -> ConversionResult:
    idx = bundle_mod.index(data)
    moment = options.effective_time or dt.datetime.now(dt.UTC)
    patients = idx.of_type("Patient")
    patient = patients[0] if patients else None
    seed = (
        "|".join(
            x for x in (header.nhs_number(patient), idx.bundle_id if patient is None else "") if x
        )
        or "anonymous"
    )
    ctx = Context(idx, options, now_ts(moment), seed)
    practice = header.practice_of(ctx, patient)
    ctx.seed = seed + "|" + header.ods_code(practice)
    for problem in idx.skipped_entries:
        ctx.warn(problem)
    if len(patients) > 1:
        ctx.warn(f"bundle has {len(patients)} Patient resources; the first is the record target")
    if options.validate_models:
        _validate_models(ctx)
    lists.collect(ctx)
    obs_plan = classify.plan(ctx)
    builders: list[tuple[SectionSpec, Callable[[], cda.Element]]] = [
        (allergies.SPEC, lambda: allergies.build(ctx)),
        (medications.SPEC, lambda: medications.build(ctx)),
        (problems.SPEC, lambda: problems.build(ctx)),
        (results.SPEC, lambda: results.build(ctx, obs_plan)),
        (vitals.SPEC, lambda: vitals.build(ctx, obs_plan.vitals)),
        (social.SPEC, lambda: social.build(ctx, obs_plan.smoking, obs_plan.social)),
        (immunizations.SPEC, lambda: immunizations.build(ctx)),
        (procedures.SPEC, lambda: procedures.build(ctx)),
        (encounters.SPEC, lambda: encounters.build(ctx)),
        (plan.SPEC, lambda: plan.build(ctx)),
        (notes.SPEC, lambda: notes.build(ctx, obs_plan.notes)),
    ]
    if options.document_id_root:
        doc_id: tuple[str, str | None] = (options.document_id_root, str(uuid.uuid4()).upper())
    else:
        doc_id = (str(uuid.uuid4()).upper(), None)
    root = header.build(ctx, patient, practice, doc_id)
    body = cda.sub(cda.sub(root, "component"), "structuredBody")
    for spec, build in builders:
        # Sections are built in place (moving a finished subtree into another document costs a
        # walk over every node).
        ctx.section_parent = cda.sub(body, "component")
        try:
            build()
        except Exception as exc:  # noqa: BLE001 - degrade per section, never fail the document
            ctx.warn(f"section {spec.key} could not be built ({type(exc).__name__}); left empty")
            for partial in list(ctx.section_parent):
                ctx.section_parent.remove(partial)
            failed = Section(ctx, spec)
            failed.paragraph(
                "This section could not be converted from the GP record; see the GP system."
            )
            failed.finish("")
    ctx.section_parent = None
    for rtype in SUPPORTING:
        for res in idx.of_type(rtype):
            ctx.mapped(res)
    # serviceEvent/effectiveTime low is the earliest clinical date seen by the sections.
    header.service_event_time(ctx, root)
    xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return ConversionResult(
        ccd_xml=xml,
        document_id=doc_id[0] if doc_id[1] is None else f"{doc_id[0]}^{doc_id[1]}",
        coverage=ctx.coverage(),
        warnings=ctx.warnings,
        entry_count=len(data.get("entry") or []),
    )


def _validate_models(ctx: Context) -> None:
    """Optional STU3 conformance check with fhirclient 3.2.0, one entry at a time (its
    strict=False mode silently drops every entry; strict per entry tells which one is odd)."""
    from fhirclient.models.fhirelementfactory import FHIRElementFactory

    for res in ctx.idx.resources:
        if res.container is not None:
            continue
        try:
            FHIRElementFactory.instantiate(res.rtype, res.data)
        except Exception as exc:  # noqa: BLE001 - any model error is only a warning
            ctx.warn(
                f"{res.key}: not a valid STU3 {res.rtype} ({type(exc).__name__}: {str(exc)[:160]})"
            )
