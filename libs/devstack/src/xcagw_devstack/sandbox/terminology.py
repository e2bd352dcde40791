"""NHS England Terminology Server (FHIR R4) `CodeSystem/$lookup` for the sandbox's dm+d concepts.

Answers like Ontoserver does for `system=https://dmd.nhs.uk` (and the same ids under SNOMED CT):
a Parameters resource with name, version, display and the requested properties (`parent`, `VPI`
with its subproperties, `ROUTECD`). Only the concepts in `dmd.py`, their ingredients, units and
routes are known.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from xcagw_devstack.sandbox import dmd
from xcagw_devstack.sandbox.outcomes import json_response

router = APIRouter()
PATH = "/terminology/FHIR/R4/CodeSystem/$lookup"

_NAMES = {dmd.DMD_SYSTEM: "dm+d", dmd.SNOMED_SYSTEM: "SNOMED CT"}
_VERSIONS = {
    dmd.DMD_SYSTEM: "https://dmd.nhs.uk/version/2025-06-16",
    dmd.SNOMED_SYSTEM: "http://snomed.info/sct/83821000000107/version/20250604",
}


class LookupError_(Exception):
    def __init__(self, status: int, issue_type: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.issue_type, self.diagnostics = status, issue_type, diagnostics


def _outcome(exc: LookupError_) -> Response:
    return json_response(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": exc.issue_type, "diagnostics": exc.diagnostics}
            ],
        },
        exc.status,
    )


def _prop(code: str, **value: Any) -> dict[str, Any]:
    return {
        "name": "property",
        "part": [{"name": "code", "valueCode": code}, {"name": "value", **value}],
    }


def _sub(code: str, **value: Any) -> dict[str, Any]:
    return {
        "name": "subproperty",
        "part": [{"name": "code", "valueCode": code}, {"name": "value", **value}],
    }


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _simple_display(code: str) -> str | None:
    if code in dmd.UNITS:
        return dmd.UNITS[code]
    if code in dmd.ROUTES:
        return dmd.ROUTES[code]
    for concept in dmd.CONCEPTS.values():
        for ing in concept.ingredients:
            if ing.code == code:
                return ing.name
    return None


def lookup_parameters(system: str, code: str, properties: list[str]) -> dict[str, Any]:
    """The $lookup answer for (system, code), or LookupError_."""
    if system not in _NAMES:
        raise LookupError_(404, "not-found", f"Unable to find CodeSystem with URL {system}")
    wanted = set(properties)
    every = not wanted or "*" in wanted
    params: list[dict[str, Any]] = [
        {"name": "name", "valueString": _NAMES[system]},
        {"name": "version", "valueString": _VERSIONS[system]},
    ]
    concept = dmd.lookup(code)
    if concept is None:
        display = _simple_display(code)
        if display is None:
            raise LookupError_(404, "not-found", f"Unable to find code {code} in {system}")
        params.append({"name": "display", "valueString": display})
        return {"resourceType": "Parameters", "parameter": params}
    params.append({"name": "display", "valueString": concept.display})
    if every or "inactive" in wanted:
        params.append(_prop("inactive", valueBoolean=False))
    if every or "parent" in wanted:
        # Ontoserver's dm+d: a concept's parents are the concept above it (VTM of a VMP, VMP of
        # an AMP) and its concept class. The concept comes first here so that readers taking the
        # first parent get an id, not a class name.
        if concept.parent:
            params.append(_prop("parent", valueCode=concept.parent))
        params.append(_prop("parent", valueCode=concept.concept_class))
    if concept.concept_class == "VMP" and (every or "VPI" in wanted):
        for ing in concept.ingredients:
            parts: list[dict[str, Any]] = [
                {"name": "code", "valueCode": "VPI"},
                _sub("ISID", valueCoding=_coding(system, ing.code, ing.name)),
                _sub("STRNT_NMRTR_VAL", valueDecimal=ing.strength),
                _sub(
                    "STRNT_NMRTR_UOMCD",
                    valueCoding=_coding(system, ing.strength_unit, dmd.UNITS[ing.strength_unit]),
                ),
            ]
            if ing.per is not None and ing.per_unit is not None:
                parts.append(_sub("STRNT_DNMTR_VAL", valueDecimal=ing.per))
                parts.append(
                    _sub(
                        "STRNT_DNMTR_UOMCD",
                        valueCoding=_coding(system, ing.per_unit, dmd.UNITS[ing.per_unit]),
                    )
                )
            params.append({"name": "property", "part": parts})
    if concept.concept_class == "VMP" and concept.route and (every or "ROUTECD" in wanted):
        params.append(
            _prop("ROUTECD", valueCoding=_coding(system, concept.route, dmd.ROUTES[concept.route]))
        )
    return {"resourceType": "Parameters", "parameter": params}


def _from_query(request: Request) -> tuple[str, str, list[str]]:
    q = request.query_params
    return q.get("system", ""), q.get("code", ""), q.getlist("property")


def _from_body(body: bytes) -> tuple[str, str, list[str]]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeError) as exc:
        raise LookupError_(400, "invalid", "The body is not a FHIR Parameters resource") from exc
    if not isinstance(doc, dict) or doc.get("resourceType") != "Parameters":
        raise LookupError_(400, "invalid", "The body is not a FHIR Parameters resource")
    system = code = ""
    properties: list[str] = []
    for p in doc.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        if name == "system":
            system = str(p.get("valueUri", ""))
        elif name == "code":
            code = str(p.get("valueCode", ""))
        elif name == "coding" and isinstance(p.get("valueCoding"), dict):
            system = str(p["valueCoding"].get("system", ""))
            code = str(p["valueCoding"].get("code", ""))
        elif name == "property":
            properties.append(str(p.get("valueCode", "")))
    return system, code, properties


@router.get(PATH)
async def lookup_get(request: Request) -> Response:
    """GET CodeSystem/$lookup?system=...&code=...&property=..."""
    try:
        system, code, properties = _from_query(request)
        if not system or not code:
            raise LookupError_(400, "required", "Both 'system' and 'code' are required")
        return json_response(lookup_parameters(system, code, properties))
    except LookupError_ as exc:
        return _outcome(exc)


@router.post(PATH)
async def lookup_post(request: Request) -> Response:
    """POST CodeSystem/$lookup with a Parameters body (system+code or coding)."""
    try:
        system, code, properties = _from_body(await request.body())
        if not system or not code:
            raise LookupError_(
                400, "required", "Both 'system' and 'code' (or 'coding') are required"
            )
        return json_response(lookup_parameters(system, code, properties))
    except LookupError_ as exc:
        return _outcome(exc)
