"""Every request in ../shared/conformance/samples/ gets a schema-valid, correct answer.

Each sample is sent as it is (foreign patient ids and communities get the right error) and, where
it names a patient or document, again with a sandbox patient and our ids in their place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from soap_edge_testkit import (
    CEID_OID,
    HCID,
    JANE,
    NHS_OID,
    REPO,
    UNIQUE_ID,
    envelope,
    find_documents,
    post,
)

from xcagw_common.testing import shared_dir

SAMPLES = shared_dir() / "conformance" / "samples"
pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="../shared/conformance/samples is absent"
)

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
JANE_CX = f"{JANE}^^^&amp;{NHS_OID}&amp;ISO".encode()


def read(rel: str) -> bytes:
    return (SAMPLES / rel).read_bytes()


def body_of(rel: str) -> str:
    """A bare-payload sample without its XML declaration, ready to wrap in an envelope."""
    text = read(rel).decode("utf-8")
    return text.split("?>", 1)[1] if text.lstrip().startswith("<?xml") else text


def mtom_content_type(data: bytes) -> str:
    boundary = data.split(b"\n", 1)[0].strip()[2:].decode()
    return (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        'start-info="application/soap+xml"'
    )


async def send(
    client, check, path: str, data: bytes, content_type: str = "application/soap+xml; charset=UTF-8"
):  # type: ignore[no-untyped-def]
    resp = await post(client, path, data, content_type)
    assert resp.status_code == 200, resp.text
    return check(resp)


def ack(parsed) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return (
        parsed.xpath("string(//h:acknowledgement/h:typeCode/@code)"),
        parsed.xpath("string(//h:queryAck/h:queryResponseCode/@code)"),
    )


# ---- ITI-47 ------------------------------------------------------------------------------------
EPR_ID = b'extension="08242eb8-dd47-4298-8d2f-25d60114f137" root="1.1.1.2.2"'
EPR_OTHER = (b'root="1.3.6.1.4.1.21367.2017.2.5.93"', b'root="2.16.756.5.30.1.127.3.10.3"')


def map_epr(data: bytes) -> bytes:
    data = data.replace(EPR_ID, f'extension="{JANE}" root="{NHS_OID}"'.encode())
    for other in EPR_OTHER:
        data = data.replace(other, f'root="{CEID_OID}"'.encode())
    return data


@pytest.mark.parametrize("mapped", [False, True])
async def test_epr_iti47_plain_and_mtom(client, check, mapped) -> None:
    for rel in ("iti47/epr-ITI-47_request_raw.soap.xml", "iti47/derived-ITI-47_request.mtom.txt"):
        data = read(rel)
        data = map_epr(data) if mapped else data
        ct = (
            mtom_content_type(data)
            if rel.endswith(".mtom.txt")
            else "application/soap+xml; charset=UTF-8"
        )
        parsed = await send(client, check, "/iti47", data, ct)
        assert parsed.header("RelatesTo") == "urn:uuid:9fe7246b-8fab-4dd7-976e-c81bc1955575"
        if mapped:
            assert ack(parsed) == ("AA", "OK")
            assert parsed.xpath("string(//h:subject1/h:patient/h:id/@extension)") == JANE
        else:
            # Its patient id is in a domain we do not know: AE with detail 204.
            assert ack(parsed) == ("AE", "AE")
            assert parsed.xpath("string(//h:acknowledgementDetail/h:code/@code)") == "204"


@pytest.mark.parametrize("mapped", [False, True])
async def test_ipf_pdq_query(client, check, mapped) -> None:
    body = body_of("iti47/ipf-01_PDQQuery1.body.xml")
    if mapped:
        body = (
            body.replace(
                'root="1.2.840.114350.1.13.99997.2.3412" extension="1234"',
                f'root="{NHS_OID}" extension="{JANE}"',
            )
            .replace('root="1.2.840.114350.1.13.99997.2.3412"', f'root="{NHS_OID}"')
            .replace('root="2.16.840.1.113883.4.1"', f'root="{NHS_OID}"')
            .replace('root="1.2.840.114350.1.13.99998.8734"', f'root="{NHS_OID}"')
            .replace("<family>Jones</family>", "<family>Smith</family>")
            .replace('value="19630804"', 'value="20101022"')
            .replace('<value code="M"/>', '<value code="F"/>')
        )
    parsed = await send(client, check, "/iti47", envelope(PDQ, body))
    assert ack(parsed) == (("AA", "OK") if mapped else ("AE", "AE"))
    assert parsed.xpath("string(//h:acknowledgement/h:targetMessage/h:id/@extension)") == "35423"


@pytest.mark.parametrize("mapped", [False, True])
async def test_ipf_maximal_query(client, check, mapped) -> None:
    body = body_of("iti47/ipf-PDQ_Maximal_Query.body.xml")
    if mapped:
        body = (
            body.replace('root="1.3.6.1.4.1.21367.2005.1.2"', f'root="{NHS_OID}"')
            .replace(
                '<family qualifier="BR">Wurm</family>', '<family qualifier="BR">Smith</family>'
            )
            .replace('value="19400101"', 'value="20101022"')
        )
    parsed = await send(client, check, "/iti47", envelope(PDQ, body))
    assert ack(parsed) == (("AA", "OK") if mapped else ("AE", "AE"))


# ---- ITI-38 ------------------------------------------------------------------------------------
NHN_PATIENT = b"17855599120^^^&amp;2.16.578.1.12.4.1.4.1&amp;ISO"


@pytest.mark.parametrize(
    "rel", ["iti38/nhn-IT_iti-38_request.soap.xml", "iti38/nhn-iti38-iti40-request-kj.soap.xml"]
)
@pytest.mark.parametrize("mapped", [False, True])
async def test_nhn_find_documents(client, check, fakes, rel, mapped) -> None:
    data = read(rel)
    data = data.replace(NHN_PATIENT, JANE_CX) if mapped else data
    parsed = await send(client, check, "/iti38", data)
    assert parsed.header("RelatesTo") == "urn:uuid:c6fda90e-a5ec-4f8d-aa1b-14802f4bf68d"
    if mapped:
        assert parsed.xpath("string(//query:AdhocQueryResponse/@status)") == SUCCESS
        assert len(parsed.xpath("//rim:ExtrinsicObject")) == 1
        if "kj" in rel:
            # The XUA attributes reached the backends in the RequestContext.
            ctx = fakes.state.last_context
            assert (ctx.user_id, ctx.purpose_of_use, ctx.user_role) == (
                "KVART GREVLING",
                "TREAT",
                "LE",
            )
            assert ctx.home_community_id == "urn:oid:2.16.578.1.12.4.1.7.1.1"
    else:
        assert parsed.xpath("string(//rs:RegistryError/@errorCode)") == "XDSUnknownPatientId"


async def test_nhn_get_associations_iti18(client, check) -> None:
    parsed = await send(
        client, check, "/xca", read("iti38/nhn-iti18-iti40-request-getassociations.soap.xml")
    )
    assert parsed.header("Action") == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    assert parsed.xpath("string(//query:AdhocQueryResponse/@status)") == SUCCESS


@pytest.mark.parametrize("mapped", [False, True])
async def test_epr_iti18_object_ref(client, check, mapped) -> None:
    data = read("iti38/epr-ITI-18_request_raw.soap.xml")
    if mapped:
        data = data.replace(
            b"7e1c6e78-58f1-4a43-ae88-0d5a5c4ab43e^^^&amp;1.3.6.1.4.1.21367.2017.2.5.45&amp;ISO",
            JANE_CX,
        )
    parsed = await send(client, check, "/iti38", data)
    if mapped:
        assert len(parsed.xpath("//rim:ObjectRef[@home]")) == 1
    else:
        assert parsed.xpath("string(//rs:RegistryError/@errorCode)") == "XDSUnknownPatientId"


async def test_nist_find_and_get_documents(client, check) -> None:
    find = body_of("iti38/nist-12300-FindDocuments-LeafClass.body.xml").replace(
        "$patient_id$", JANE_CX.decode()
    )
    found = await send(client, check, "/iti38", envelope(XCQ, find))
    entry = found.xpath("string(//rim:ExtrinsicObject/@id)")
    assert entry
    get = (
        body_of("iti38/nist-12307-GetDocuments.body.xml")
        .replace("$home", HCID)
        .replace("$doc_uuid_1$", entry)
        .replace("$doc_uuid_2$", "urn:uuid:00000000-0000-0000-0000-000000000000")
    )
    got = await send(client, check, "/iti38", envelope(XCQ, get))
    assert got.xpath("string(//rim:ExtrinsicObject/@id)") == entry
    unmapped = body_of("iti38/nist-12307-GetDocuments.body.xml")
    refused = await send(client, check, "/iti38", envelope(XCQ, unmapped))
    assert refused.xpath("string(//rs:RegistryError/@errorCode)") == "XDSUnknownCommunity"


# ---- ITI-39 ------------------------------------------------------------------------------------
async def our_document(client, check) -> str:  # type: ignore[no-untyped-def]
    resp = await post(client, "/iti38", envelope(XCQ, find_documents()))
    return str(check(resp).xpath(UNIQUE_ID))


NHN_RETRIEVES = {
    "iti39/nhn-IT_iti-39_request.soap.xml": (
        b"urn:oid:2.16.578.1.12.4.5.100.1.1",
        b"2.16.578.1.12.4.5.100.1.1.2",
        b"8f3b8038-5122-4e1b-8af4-29bb8759e8ae",
    ),
    "iti39/nhn-IT_iti-39_request.mtom.txt": (
        b"urn:oid:2.16.578.1.12.4.5.100.1",
        b"2.16.578.1.12.4.5.100.1.2",
        b"4955f740-0be2-49f3-9e67-039f0a00ad6c",
    ),
    "iti39/nhn-iti39-iti40-request-kj.soap.xml": (
        b">2.16.578.1.12.4.5.100.1<",
        b"2.16.578.1.12.4.5.100.1.2",
        b"13fa8361-dd8f-43fd-a33c-93f3237306c3",
    ),
    "iti39/epr-ITI-43_request_raw.soap.xml": (
        b"urn:oid:1.3.6.1.4.1.21367.2017.2.6.19",
        b"1.3.6.1.4.1.21367.2017.2.3.54",
        b"1.3.6.1.4.1.21367.2017.2.1.75.20200922130227623",
    ),
}


@pytest.mark.parametrize("rel", sorted(NHN_RETRIEVES))
@pytest.mark.parametrize("mapped", [False, True])
async def test_retrieve_samples(client, check, rel, mapped) -> None:
    data = read(rel)
    home, repo, uid = NHN_RETRIEVES[rel]
    if mapped:
        ours = await our_document(client, check)
        new_home = f">{HCID}<".encode() if home.startswith(b">") else HCID.encode()
        data = data.replace(home, new_home).replace(repo, REPO.encode()).replace(uid, ours.encode())
    ct = (
        mtom_content_type(data)
        if rel.endswith(".mtom.txt")
        else "application/soap+xml; charset=UTF-8"
    )
    parsed = await send(client, check, "/xca", data, ct)
    status = parsed.xpath("string(//rs:RegistryResponse/@status)")
    if mapped:
        assert status == SUCCESS and len(parsed.attachments) == 1
    else:
        assert status == FAILURE
        assert parsed.xpath("string(//rs:RegistryError/@errorCode)") == "XDSUnknownCommunity"


async def test_nist_retrieve_body(client, check) -> None:
    ours = await our_document(client, check)
    body = (
        body_of("iti39/nist-12315-retrieve.body.xml")
        .replace("$home$", HCID)
        .replace("$repositoryuid$", REPO)
        .replace("$docuid$", ours)
    )
    parsed = await send(client, check, "/iti39", envelope(XCR, body))
    assert parsed.xpath("string(//rs:RegistryResponse/@status)") == SUCCESS


def test_every_request_sample_is_covered() -> None:
    covered = {
        "iti47/epr-ITI-47_request_raw.soap.xml",
        "iti47/derived-ITI-47_request.mtom.txt",
        "iti47/ipf-01_PDQQuery1.body.xml",
        "iti47/ipf-PDQ_Maximal_Query.body.xml",
        "iti38/nhn-IT_iti-38_request.soap.xml",
        "iti38/nhn-iti38-iti40-request-kj.soap.xml",
        "iti38/nhn-iti18-iti40-request-getassociations.soap.xml",
        "iti38/epr-ITI-18_request_raw.soap.xml",
        "iti38/nist-12300-FindDocuments-LeafClass.body.xml",
        "iti38/nist-12307-GetDocuments.body.xml",
        "iti39/nist-12315-retrieve.body.xml",
        *NHN_RETRIEVES,
    }
    present = {
        str(p.relative_to(SAMPLES))
        for d in ("iti38", "iti39", "iti47")
        for p in Path(SAMPLES, d).iterdir()
    }
    assert present <= covered, present - covered
