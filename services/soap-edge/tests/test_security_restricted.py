"""Restricted patients (PDS security label R, V or S): no transaction discloses anything about
them, cache hits included. Each answer is the one an unknown patient / unknown id gets, and
carries no NHS number, name or document id; GP Connect is never called for them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from lxml import etree
from soap_edge_testkit import (
    GET_DOCUMENTS,
    HCID,
    JANE,
    NHS_OID,
    ON_DEMAND,
    REPO,
    STABLE,
    UNKNOWN,
    FakeBackends,
    adhoc_body,
    envelope,
    find_documents,
    pdq_body,
    post,
    retrieve_body,
)

from xcagw.pds.v1 import pds_adapter_pb2

XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
HL7 = "urn:hl7-org:v3"
XCPD = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
BOTH_TYPES = {"$XDSDocumentEntryType": [f"('{STABLE}','{ON_DEMAND}')"]}
SECRET_WORDS = (JANE.encode(), b"Smith", b"Jane", b"Trevelyan", b"LS1 6AE", b"01632")


def restrict(fakes: FakeBackends, label: str) -> None:
    patient = pds_adapter_pb2.Patient()
    patient.CopyFrom(fakes.state.patients[JANE])
    patient.security_label = label
    fakes.state.patients[JANE] = patient


async def call(client: Any, check: Any, path: str, action: str, body: str) -> Any:
    resp = await post(client, path, envelope(action, body))
    assert resp.status_code == 200, resp.text
    return resp, check(resp)


def hidden(parsed: Any, *extra: str) -> None:
    """Nothing about the patient in the answer (the echo of the partner's own HL7 query aside:
    PRPA_IN201306UV02 must repeat queryByParameter, ITI TF-2b 3.47.4.2)."""
    root = copy.deepcopy(parsed.root)
    for echo in root.iter(f"{{{HL7}}}queryByParameter"):
        echo.getparent().remove(echo)
    body = etree.tostring(root) + b"".join(parsed.attachments.values())
    for word in (*SECRET_WORDS, *(e.encode() for e in extra)):
        assert word not in body, word


def codes(parsed: Any, xpath: str) -> list[str]:
    return [str(c) for c in parsed.xpath(xpath)]


async def hl7_answers(client: Any, check: Any) -> list[tuple[str, str, int]]:
    """(ack, queryResponseCode, subjects) for ITI-47 by id / by demographics and ITI-55."""
    out = []
    for path, action, body in (
        ("/iti47", PDQ, pdq_body(ids=[(NHS_OID, JANE)])),
        ("/iti47", PDQ, pdq_body(family="Smith", given=["Jane"], birth="20101022", gender="F")),
        ("/iti55", XCPD, pdq_body(ids=[(NHS_OID, JANE)], xcpd_initiator="1.2.3.4.55")),
    ):
        _, parsed = await call(client, check, path, action, body)
        hidden(parsed)
        out.append(
            (
                parsed.xpath("string(//h:acknowledgement/h:typeCode/@code)"),
                parsed.xpath("string(//h:queryAck/h:queryResponseCode/@code)"),
                len(parsed.xpath("//h:subject1")),
            )
        )
    return out


@pytest.mark.parametrize("label", ["R", "V", "S"])
async def test_restricted_from_the_start(client, check, fakes, label: str) -> None:  # type: ignore[no-untyped-def]
    restrict(fakes, label)
    assert await hl7_answers(client, check) == [("AA", "NF", 0)] * 3
    _, parsed = await call(client, check, "/iti38", XCQ, find_documents(JANE, extra=BOTH_TYPES))
    hidden(parsed)
    _, unknown = await call(client, check, "/iti38", XCQ, find_documents(UNKNOWN))
    errs = "//rs:RegistryError/@errorCode"
    assert codes(parsed, errs) == codes(unknown, errs) == ["XDSUnknownPatientId"]
    assert fakes.state.calls["GetStructuredRecord"] == 0


@pytest.mark.parametrize("label", ["R", "V", "S"])
async def test_restricted_after_caching_cache_hits_disclose_nothing(  # type: ignore[no-untyped-def]
    client, check, fakes, label: str
) -> None:
    # While unrestricted: a stable snapshot is generated and an on-demand entry registered.
    _, found = await call(client, check, "/iti38", XCQ, find_documents(JANE, extra=BOTH_TYPES))
    entries = {
        eo.get("objectType"): (
            eo.get("id"),
            eo.xpath(
                "string(rim:ExternalIdentifier[@identificationScheme="
                "'urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']/@value)",
                namespaces={"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"},
            ),
        )
        for eo in found.xpath("//rim:ExtrinsicObject")
    }
    (stable_entry, stable_uid), (od_entry, od_uid) = entries[STABLE], entries[ON_DEMAND]
    generated = fakes.state.calls["GetStructuredRecord"]
    assert generated == 1

    restrict(fakes, label)
    ids = (stable_entry, stable_uid, od_entry, od_uid)

    # ITI-38 FindDocuments: as for an unknown patient.
    _, parsed = await call(client, check, "/iti38", XCQ, find_documents(JANE, extra=BOTH_TYPES))
    hidden(parsed, *ids)
    assert codes(parsed, "//rs:RegistryError/@errorCode") == ["XDSUnknownPatientId"]

    # ITI-38 GetDocuments by entryUUID and by uniqueId: as for ids never issued.
    for slot, values in (
        ("$XDSDocumentEntryEntryUUID", [stable_entry, od_entry]),
        ("$XDSDocumentEntryUniqueId", [stable_uid, od_uid]),
    ):
        quoted = "(" + ",".join(f"'{v}'" for v in values) + ")"
        body = adhoc_body(GET_DOCUMENTS, {slot: [quoted]}, home=HCID)
        _, parsed = await call(client, check, "/iti38", XCQ, body)
        hidden(parsed, *ids)
        assert parsed.xpath("string(//query:AdhocQueryResponse/@status)") == SUCCESS
        assert parsed.xpath("count(//rim:ExtrinsicObject)") == 0
        never = adhoc_body(GET_DOCUMENTS, {slot: ["('urn:uuid:0-never-issued')"]}, home=HCID)
        _, unknown = await call(client, check, "/iti38", XCQ, never)
        assert unknown.xpath("count(//rim:RegistryError)") == parsed.xpath(
            "count(//rim:RegistryError)"
        )

    # ITI-39 for the stored (stable) and the on-demand document: as for an unknown id.
    for uid in (stable_uid, od_uid):
        resp = await post(client, "/iti39", envelope(XCR, retrieve_body((HCID, REPO, uid))))
        parsed = check(resp)
        hidden(parsed, *ids)
        assert codes(parsed, "//rs:RegistryError/@errorCode") == ["XDSDocumentUniqueIdError"]
        assert not parsed.attachments

    # ITI-47 / ITI-55: not found.
    assert await hl7_answers(client, check) == [("AA", "NF", 0)] * 3
    assert fakes.state.calls["GetStructuredRecord"] == generated  # nothing fetched for them
