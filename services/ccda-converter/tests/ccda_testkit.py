"""FHIR builders, XPath helpers and a gRPC stub shared by the ccda-converter tests.

Imported by name (the tests' conftest puts this folder on sys.path; --import-mode=importlib does
not). The builders produce GP Connect-shaped STU3 resources; their keyword arguments cover the
few ways the tests' patients differ (no practice, no NHS number, a partial birth date...).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from lxml import etree

from ccda_converter.convert import ConversionResult, ConvertOptions, convert_bundle
from ccda_converter.ns import XPATH_NS
from ccda_converter.servicer import CcdaConverterServicer
from xcagw.ccda.v1 import ccda_converter_pb2_grpc

NS = XPATH_NS
WHEN = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
SCT = "http://snomed.info/sct"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"

Stub = ccda_converter_pb2_grpc.CcdaConverterServiceStub


def cc(code: str, display: str, system: str = SCT, text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept of one coding (and a ``text`` only when given)."""
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text is not None:
        out["text"] = text
    return out


def patient(
    *,
    pid: str = "p1",
    nhs_number: str | None = "9000000009",
    name_use: str | None = "usual",
    gender: str | None = "female",
    birth_date: str = "1980-02-03",
    address: bool = False,
    practice: str | None = "Organization/o1",
    **extra: Any,
) -> dict[str, Any]:
    """Jane SMITH; a keyword set to None leaves its element out, ``address`` adds a home one."""
    name: dict[str, Any] = {"family": "SMITH", "given": ["Jane"]}
    if name_use is not None:
        name = {"use": name_use, **name}
    out: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if nhs_number is not None:
        out["identifier"] = [{"system": NHS_NUMBER, "value": nhs_number}]
    out["name"] = [name]
    if gender is not None:
        out["gender"] = gender
    out["birthDate"] = birth_date
    if address:
        out["address"] = [
            {"use": "home", "line": ["1 Lane"], "city": "LEEDS", "postalCode": "LS1 1AA"}
        ]
    if practice is not None:
        out["managingOrganization"] = {"reference": practice}
    return {**out, **extra}


def org(oid: str = "o1", name: str = "COXWOLD SURGERY") -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": oid,
        "identifier": [
            {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B82617"}
        ],
        "name": name,
        "telecom": [{"system": "phone", "value": "0113 1234567"}],
    }


def collection(*resources: dict[str, Any]) -> dict[str, Any]:
    """A collection Bundle of exactly ``resources``."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def bundle(*resources: dict[str, Any], pat: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GP Connect record: the patient (``pat``, else the default one), the practice, then
    ``resources``."""
    return collection(pat or patient(), org(), *resources)


def listing(code: str, title: str, refs: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "snapshot",
        "title": title,
        "code": cc(code, title),
        "entry": [{"item": {"reference": r}} for r in refs],
        **extra,
    }


def condition(cid: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An active Condition."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": "active",
        "code": code,
        **extra,
    }


def observation(oid: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A final Observation."""
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": code, **extra}


def ccd(data: dict[str, Any], **options: Any) -> tuple[etree._Element, ConversionResult]:
    """``data`` converted at the fixed time WHEN: the parsed CCD and the conversion result."""
    result = convert_bundle(data, options=ConvertOptions(effective_time=WHEN, **options))
    return etree.fromstring(result.ccd_xml), result


def section(root: etree._Element, loinc: str) -> etree._Element:
    """The one section coded ``loinc``."""
    found = root.xpath(f"//cda:section[cda:code/@code='{loinc}']", namespaces=NS)
    assert len(found) == 1
    return found[0]


@contextlib.asynccontextmanager
async def serving(servicer: CcdaConverterServicer) -> AsyncIterator[Stub]:
    """``servicer`` on a real grpc.aio server on a free port; a stub on a real channel to it."""
    server = grpc.aio.server()
    ccda_converter_pb2_grpc.add_CcdaConverterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stub(channel)
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def thread_pool_stub(**servicer_options: Any) -> AsyncIterator[Stub]:
    """A servicer converting on a pool of two threads, served as by ``serving``."""
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with serving(CcdaConverterServicer(executor=executor, **servicer_options)) as stub:
            yield stub
