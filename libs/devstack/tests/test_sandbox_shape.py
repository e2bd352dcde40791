"""Sandbox responses have the JSON shape of the real examples in ../shared/nhs (keys and types).

Where both the sandbox and a real example have a key, the JSON types must agree, recursively. Real
examples of one kind are merged into one schema (a key may be a string in one file and an object in
another only if the real files disagree too). Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from xcagw_devstack.sandbox.testkit import ALL_AREAS, gpc_headers, parameters, pds_headers


@dataclass
class Schema:
    types: set[str] = field(default_factory=set)
    keys: dict[str, Schema] = field(default_factory=dict)
    items: Schema | None = None

    def add(self, value: Any) -> Schema:
        kind = json_type(value)
        self.types.add(kind)
        if kind == "object":
            for k, v in value.items():
                self.keys.setdefault(k, Schema()).add(v)
        elif kind == "array":
            for v in value:
                self.items = (self.items or Schema()).add(v)
        return self


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def mismatches(value: Any, schema: Schema, path: str = "$") -> list[str]:
    kind = json_type(value)
    if kind not in schema.types:
        return [f"{path}: sandbox {kind}, real {sorted(schema.types)}"]
    out: list[str] = []
    if kind == "object":
        for k, v in value.items():
            if k in schema.keys:
                out += mismatches(v, schema.keys[k], f"{path}.{k}")
    elif kind == "array" and schema.items is not None:
        for i, v in enumerate(value):
            out += mismatches(v, schema.items, f"{path}[{i}]")
    return out


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def shared_keys(value: dict[str, Any], schema: Schema) -> set[str]:
    return set(value) & set(schema.keys)


async def test_pds_patient_shape(client: httpx.AsyncClient, token: str, shared: Path) -> None:
    pds = shared / "nhs" / "pds"
    schema = Schema()
    for f in [
        pds / "spec-examples" / "Patient.json",
        *sorted((pds / "int-captures").glob("*.json")),
        *sorted((pds / "karate-stubs" / "patients").glob("*.json")),
    ]:
        schema.add(load(f))
    for nhs in ("9000000009", "9000000025", "9000000084", "9000000092"):
        body = (
            await client.get(
                f"/personal-demographics/FHIR/R4/Patient/{nhs}", headers=pds_headers(token)
            )
        ).json()
        assert mismatches(body, schema) == []
        assert len(shared_keys(body, schema)) >= 8


async def test_pds_search_and_outcome_shapes(
    client: httpx.AsyncClient, token: str, shared: Path
) -> None:
    pds = shared / "nhs" / "pds"
    search_schema = Schema()
    for f in sorted((pds / "karate-stubs" / "search").glob("*searchset*.json")):
        search_schema.add(load(f))
    search_schema.add(load(pds / "spec-examples" / "PatientSearch.json"))
    params = {"family": "Smith", "gender": "female", "birthdate": "eq2010-10-22"}
    body = (
        await client.get(
            "/personal-demographics/FHIR/R4/Patient", params=params, headers=pds_headers(token)
        )
    ).json()
    assert mismatches(body, search_schema) == []

    outcome_schema = Schema()
    for f in sorted((pds / "errors").rglob("*.json")):
        doc = load(f)
        if doc.get("resourceType") == "OperationOutcome":
            outcome_schema.add(doc)
    outcome_schema.add(load(pds / "karate-stubs" / "search" / "TOO_MANY_MATCHES.json"))
    too_many = (
        await client.get(
            "/personal-demographics/FHIR/R4/Patient",
            params={"family": "JONES", "birthdate": "eq1980-04-12"},
            headers=pds_headers(token),
        )
    ).json()
    assert too_many == load(pds / "karate-stubs" / "search" / "TOO_MANY_MATCHES.json")
    for url in (
        "/personal-demographics/FHIR/R4/Patient/9000000000",
        "/personal-demographics/FHIR/R4/Patient/9000000076",
    ):
        assert (
            mismatches((await client.get(url, headers=pds_headers(token))).json(), outcome_schema)
            == []
        )


async def test_gpconnect_bundle_shape(client: httpx.AsyncClient, shared: Path) -> None:
    real = [
        *sorted((shared / "xhuma-fixtures" / "bundles").glob("*.json")),
        shared
        / "nhs"
        / "gpconnect"
        / "gp-connect-access-record-fhir-api"
        / "example_bundle_with_warning.json",
        shared
        / "nhs"
        / "gpconnect"
        / "gp-connect-access-record-fhir-api"
        / "example_response.json",
    ]
    bundle_schema = Schema()
    per_type: dict[str, Schema] = {}
    for f in real:
        doc = load(f)
        bundle_schema.add({k: v for k, v in doc.items() if k != "entry"})
        for entry in doc["entry"]:
            resource = entry["resource"]
            per_type.setdefault(resource["resourceType"], Schema()).add(resource)
    body = json.dumps(parameters("9000000009", *ALL_AREAS)).encode()
    resp = await client.post(
        "/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord",
        content=body,
        headers=gpc_headers("Y12345", "918999198001"),
    )
    ours = resp.json()
    assert mismatches({k: v for k, v in ours.items() if k != "entry"}, bundle_schema) == []
    compared: set[str] = set()
    problems: list[str] = []
    for entry in ours["entry"]:
        resource = entry["resource"]
        schema = per_type.get(resource["resourceType"])
        if schema is None:
            continue
        compared.add(resource["resourceType"])
        problems += mismatches(resource, schema, resource["resourceType"])
    assert problems == []
    assert compared >= {
        "Patient",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "List",
        "AllergyIntolerance",
        "MedicationStatement",
        "MedicationRequest",
        "Medication",
        "Condition",
        "Observation",
        "Immunization",
        "Encounter",
        "DiagnosticReport",
        "Specimen",
        "ProcedureRequest",
    }


async def test_gpconnect_error_shape(client: httpx.AsyncClient, shared: Path) -> None:
    errors = shared / "nhs" / "gpconnect" / "errors"
    schema = Schema()
    for f in sorted(errors.glob("OperationOutcome_*.json")):
        schema.add(load(f))
    resp = await client.post(
        "/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord",
        content=json.dumps(parameters("9000000084")).encode(),
        headers=gpc_headers("Y12345", "918999198001"),
    )
    ours = resp.json()
    assert mismatches(ours, schema) == []
    real = load(errors / "OperationOutcome_PATIENT_NOT_FOUND.json")
    assert ours == real
    ssp_schema = Schema()
    for f in sorted(errors.glob("SSP_OperationOutcome_*.json")):
        ssp_schema.add(load(f))
    resp = await client.post(
        "/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord",
        content=json.dumps(parameters("9000000009")).encode(),
        headers=gpc_headers("Y12345", "918999198001", Ssp_From="100000000001"),
    )
    assert mismatches(resp.json(), ssp_schema) == []


async def test_sds_shapes(client: httpx.AsyncClient, shared: Path) -> None:
    sds = shared / "nhs" / "sds"
    headers = {"apikey": "test-api-key"}
    org = "https://fhir.nhs.uk/Id/ods-organization-code|B82617"
    interaction = "https://fhir.nhs.uk/Id/nhsServiceInteractionId|urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
    for path, files in (
        ("Device", ("single_device.json", "multiple_devices.json")),
        ("Endpoint", ("single_endpoint.json", "multiple_endpoints.json")),
    ):
        schema = Schema()
        for f in files:
            schema.add(load(sds / f))
        resp = await client.get(
            f"/spine-directory/FHIR/R4/{path}",
            params={"organization": org, "identifier": interaction},
            headers=headers,
        )
        body = resp.json()
        assert body["total"] == 1
        assert mismatches(body, schema) == []


def test_schema_comparison_catches_type_changes() -> None:
    real = Schema().add(
        {"birthDate": "2010-10-22", "name": [{"given": ["Jane"]}], "meta": {"versionId": "2"}}
    )
    real.add({"name": [{"family": "Smith"}]})
    assert mismatches({"name": [{"family": "Jones", "given": ["A"]}], "extra": 1}, real) == []
    assert mismatches(
        {"birthDate": 20101022, "name": [{"given": "Jane"}], "meta": {"versionId": 2}}, real
    ) == [
        "$.birthDate: sandbox number, real ['string']",
        "$.name[0].given: sandbox string, real ['array']",
        "$.meta.versionId: sandbox number, real ['string']",
    ]
