"""SOAP 1.2 / WS-Addressing / MTOM layer: parsing limits, faults, dispatch, ReplyTo, WSDL."""

from __future__ import annotations

import base64

import httpx
import pytest
from lxml import etree
from soap_edge_testkit import (
    HCID,
    JANE,
    NHS_OID,
    NS,
    REPO,
    SOAP_CT,
    envelope,
    find_documents,
    mtom_wrap,
    pdq_body,
    post,
    read_response,
    retrieve_body,
)

from soap_edge.soap import mtom
from soap_edge.soap.faults import FaultCode, SoapFault
from soap_edge.soap.parsing import XmlRejected, parse_untrusted

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"


def fault_parts(resp: httpx.Response) -> tuple[str, str | None, str]:
    root = etree.fromstring(resp.content)
    fault = root.find("env:Body/env:Fault", NS)
    assert fault is not None, resp.text
    code = fault.findtext("env:Code/env:Value", namespaces=NS)
    sub = fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS)
    reason = fault.findtext("env:Reason/env:Text", namespaces=NS)
    return code or "", sub, reason or ""


# ---- Pure parsing ------------------------------------------------------------------------------
def test_parser_refuses_doctype_and_does_not_expand_entities() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>'
    )
    with pytest.raises(XmlRejected, match="DOCTYPE"):
        parse_untrusted(bomb, max_bytes=10_000, max_depth=10)
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    with pytest.raises(XmlRejected):
        parse_untrusted(external, max_bytes=10_000, max_depth=10)


def test_parser_enforces_depth_and_size() -> None:
    deep = b"<a>" * 30 + b"</a>" * 30
    with pytest.raises(XmlRejected, match="deeper"):
        parse_untrusted(deep, max_bytes=10_000, max_depth=20)
    assert parse_untrusted(deep, max_bytes=10_000, max_depth=30).tag == "a"
    with pytest.raises(XmlRejected, match="larger"):
        parse_untrusted(b"<a>" + b"x" * 100 + b"</a>", max_bytes=50, max_depth=5)


def test_parser_retries_latin1_bytes_declared_utf8() -> None:
    data = '<?xml version="1.0" encoding="UTF-8"?><a>Bjørn</a>'.encode("latin-1")
    assert parse_untrusted(data, max_bytes=1000, max_depth=5).text == "Bjørn"


def test_media_type_parsing_is_not_a_substring_test() -> None:
    ct = (
        'multipart/related; type="application/xop+xml"; start="<a@b>"; '
        'start-info="application/soap+xml"; boundary=xyz'
    )
    media = mtom.parse_media_type(ct)
    assert media is not None and media.type == "multipart/related"
    assert media.param("start-info") == "application/soap+xml" and media.param("boundary") == "xyz"
    assert (
        mtom.parse_media_type('Application/SOAP+XML; charset=utf-8; action="x"').type
        == "application/soap+xml"
    )  # type: ignore[union-attr]
    assert mtom.parse_media_type("garbage") is None


XOP_DOC = (
    b'<d xmlns:xop="http://www.w3.org/2004/08/xop/include"><v><xop:Include href="cid:CID"/></v></d>'
)


def test_multipart_limits_and_xop_resolution() -> None:
    env, ct = mtom_wrap(b"<e/>", {"a@x": b"\x00\x01binary", "b@x": b"two"})
    boundary = mtom.parse_media_type(ct).param("boundary")  # type: ignore[union-attr]
    parts = mtom.split_multipart(env, boundary, max_parts=5)  # type: ignore[arg-type]
    assert [p.content_id for p in parts] == ["root.message@test", "a@x", "b@x"]
    assert parts[1].body == b"\x00\x01binary"
    with pytest.raises(SoapFault, match="more than 2 parts"):
        mtom.split_multipart(env, boundary, max_parts=2)  # type: ignore[arg-type]
    root = etree.fromstring(XOP_DOC.replace(b"CID", b"a%40x"))
    mtom.resolve_xop(root, {"a@x": b"\x00\x01binary"})
    assert base64.b64decode(root.findtext("v") or "") == b"\x00\x01binary"
    missing = etree.fromstring(XOP_DOC.replace(b"CID", b"zz"))
    with pytest.raises(SoapFault):
        mtom.resolve_xop(missing, {})


# ---- Faults through the app --------------------------------------------------------------------
async def test_soap11_envelope_gets_version_mismatch(client, check) -> None:
    body = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>'
    resp = await post(client, "/iti38", body, "text/xml; charset=utf-8")
    assert resp.status_code == 500
    code, _, reason = fault_parts(resp)
    assert code == "env:VersionMismatch" and "SOAP 1.2" in reason
    parsed = check(resp)
    assert parsed.root.find("env:Header/env:Upgrade/env:SupportedEnvelope", NS) is not None


@pytest.mark.parametrize(
    ("data", "content_type", "status", "needle"),
    [
        (b"not xml at all", SOAP_CT, 400, "well-formed"),
        (b"<a/>", SOAP_CT, 400, "not a SOAP 1.2 envelope"),
        (b"<a/>", "application/json", 415, "Unsupported Content-Type"),
        (b"<a/>", "", 415, "Content-Type"),
        (
            b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body/></env:Envelope>',
            SOAP_CT,
            400,
            "exactly one",
        ),
    ],
)
async def test_malformed_requests_get_sender_faults(
    client, check, data, content_type, status, needle
) -> None:
    resp = await client.post("/xca", content=data, headers={"content-type": content_type})
    assert resp.status_code == status
    code, _, reason = fault_parts(resp)
    assert code == "env:Sender" and needle in reason
    assert resp.headers["content-type"].startswith("application/soap+xml")
    check(resp)


async def test_missing_action_and_message_id(client, check) -> None:
    body = envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), include_message_id=False)
    resp = await post(client, "/iti47", body)
    assert resp.status_code == 400
    assert fault_parts(resp)[1] == "wsa:MessageAddressingHeaderRequired"
    parsed = check(resp)
    assert parsed.header("Action") == "http://www.w3.org/2005/08/addressing/fault"
    assert (
        parsed.root.findtext("env:Body/env:Fault/env:Detail/wsa:ProblemHeaderQName", namespaces=NS)
        == "wsa:MessageID"
    )
    no_action = envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)])).replace(
        f'<wsa:Action env:mustUnderstand="true">{PDQ}</wsa:Action>'.encode(), b""
    )
    resp = await post(client, "/iti47", no_action)
    assert fault_parts(resp)[1] == "wsa:MessageAddressingHeaderRequired"
    assert check(resp).header("RelatesTo") is not None  # the MessageID was readable


async def test_unknown_or_mismatched_action(client, check) -> None:
    resp = await post(
        client,
        "/iti47",
        envelope("urn:example:Nope", pdq_body(ids=[(NHS_OID, JANE)]), message_id="urn:uuid:1"),
    )
    assert resp.status_code == 400 and fault_parts(resp)[1] == "wsa:ActionNotSupported"
    assert check(resp).header("RelatesTo") == "urn:uuid:1"
    # Right action, wrong body root.
    resp = await post(client, "/xca", envelope(XCQ, pdq_body(ids=[(NHS_OID, JANE)])))
    assert (
        fault_parts(resp)[1] == "wsa:ActionNotSupported"
        and "does not match" in fault_parts(resp)[2]
    )
    # A valid action on the wrong per-transaction endpoint.
    resp = await post(client, "/iti47", envelope(XCQ, find_documents()))
    assert fault_parts(resp)[1] == "wsa:ActionNotSupported"
    check(resp)


async def test_must_understand(client, check) -> None:
    extra = '<x:Custom xmlns:x="urn:example:ext" env:mustUnderstand="1">v</x:Custom>'
    resp = await post(
        client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=extra)
    )
    assert resp.status_code == 500
    assert fault_parts(resp)[0] == "env:MustUnderstand"
    parsed = check(resp)
    nu = parsed.root.find("env:Header/env:NotUnderstood", NS)
    assert nu is not None
    prefix, local = nu.get("qname").split(":")
    assert local == "Custom" and nu.nsmap[prefix] == "urn:example:ext"
    # Not targeted at us (role none), or not mandatory: processed normally.
    for extra in (
        '<x:Custom xmlns:x="urn:example:ext" env:mustUnderstand="true" env:role="http://www.w3.org/2003/05/soap-envelope/role/none">v</x:Custom>',
        '<x:Custom xmlns:x="urn:example:ext">v</x:Custom>',
    ):
        resp = await post(
            client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=extra)
        )
        assert resp.status_code == 200, resp.text
        check(resp)


async def test_non_anonymous_reply_to_is_refused_by_default(client, check) -> None:
    body = envelope(
        PDQ, pdq_body(ids=[(NHS_OID, JANE)]), reply_to="https://attacker.example/collect"
    )
    resp = await post(client, "/iti47", body)
    assert resp.status_code == 400
    assert fault_parts(resp)[1] == "wsa:OnlyAnonymousAddressSupported"
    check(resp)


async def test_non_anonymous_fault_to_is_refused(client, check) -> None:
    fault_to = (
        "<wsa:FaultTo><wsa:Address>https://attacker.example/faults</wsa:Address></wsa:FaultTo>"
    )
    resp = await post(
        client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=fault_to)
    )
    assert resp.status_code == 400
    assert fault_parts(resp)[1] == "wsa:OnlyAnonymousAddressSupported"
    assert "FaultTo" in resp.text  # the problem header is named
    check(resp)
    # Anonymous and "none" FaultTo addresses are fine: the answer comes back on the HTTP response.
    for address in (
        "http://www.w3.org/2005/08/addressing/anonymous",
        "http://www.w3.org/2005/08/addressing/none",
    ):
        header = f"<wsa:FaultTo><wsa:Address>{address}</wsa:Address></wsa:FaultTo>"
        ok = await post(
            client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=header)
        )
        assert ok.status_code == 200, ok.text
        check(ok)


async def test_async_reply_for_allow_listed_partner(client, check, tmp_path) -> None:
    app = client.app
    app.state.settings.async_replies_enabled = True
    app.state.settings.async_reply_allowlist = ["https://partner.example/xca/replies"]
    delivered: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        delivered.append(request)
        return httpx.Response(202)

    await app.state.http.aclose()
    app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    refused = envelope(
        PDQ, pdq_body(ids=[(NHS_OID, JANE)]), reply_to="https://partner.example.evil/xca/replies"
    )
    assert (
        fault_parts(await post(client, "/iti47", refused))[1] == "wsa:OnlyAnonymousAddressSupported"
    )
    plain_http = envelope(
        PDQ, pdq_body(ids=[(NHS_OID, JANE)]), reply_to="http://partner.example/xca/replies"
    )
    assert (
        fault_parts(await post(client, "/iti47", plain_http))[1]
        == "wsa:OnlyAnonymousAddressSupported"
    )
    body = envelope(
        PDQ,
        pdq_body(ids=[(NHS_OID, JANE)]),
        message_id="urn:uuid:async-1",
        reply_to="https://partner.example/xca/replies/1",
    )
    resp = await post(client, "/iti47", body)
    assert resp.status_code == 202 and resp.content == b""
    assert len(delivered) == 1  # exactly one delivery, to the ReplyTo address
    sent = delivered[0]
    assert str(sent.url) == "https://partner.example/xca/replies/1"
    fake = httpx.Response(
        200, content=sent.content, headers={"content-type": sent.headers["content-type"]}
    )
    parsed = check(fake)
    assert parsed.header("RelatesTo") == "urn:uuid:async-1"
    assert parsed.header("To") == "https://partner.example/xca/replies/1"
    assert parsed.xpath("string(//h:acknowledgement/h:typeCode/@code)") == "AA"


async def test_mtom_requests_accepted_on_every_endpoint(client, check) -> None:
    cases = [
        ("/iti47", PDQ, pdq_body(ids=[(NHS_OID, JANE)])),
        (
            "/iti55",
            "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
            pdq_body(ids=[(NHS_OID, JANE)]),
        ),
        ("/iti38", XCQ, find_documents(return_type="ObjectRef")),
        ("/iti39", XCR, retrieve_body((HCID, REPO, "1.2.3"))),
        ("/xca", PDQ, pdq_body(ids=[(NHS_OID, JANE)])),
    ]
    for path, action, body in cases:
        data, ct = mtom_wrap(envelope(action, body))
        resp = await post(client, path, data, ct)
        assert resp.status_code == 200, (path, resp.text)
        check(resp)


async def test_xop_include_in_a_header_is_resolved(client, check) -> None:
    wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
    header = (
        f'<wsse:Security xmlns:wsse="{wsse}" env:mustUnderstand="1"><wsse:BinarySecurityToken>'
        '<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:tok%40test"/>'
        "</wsse:BinarySecurityToken></wsse:Security>"
    )
    data, ct = mtom_wrap(
        envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=header),
        {"tok@test": b"\x01\x02"},
    )
    resp = await post(client, "/iti47", data, ct)
    assert resp.status_code == 200, resp.text
    data, ct = mtom_wrap(envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), extra_headers=header))
    resp = await post(client, "/iti47", data, ct)
    assert resp.status_code == 400 and "MIME part" in fault_parts(resp)[2]
    check(resp)


async def test_size_cap(client, check) -> None:
    client.app.state.settings.max_request_bytes = 2048
    body = envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)], family="x" * 4000))
    resp = await post(client, "/iti47", body)
    assert resp.status_code == 413 and fault_parts(resp)[0] == "env:Sender"
    check(resp)


async def test_never_json(client, check) -> None:
    for method, path in (
        ("PUT", "/iti47"),
        ("GET", "/nowhere"),
        ("GET", "/iti38"),
        ("DELETE", "/xca"),
    ):
        resp = await client.request(method, path)
        assert resp.status_code in (404, 405), (method, path, resp.status_code)
        assert resp.headers["content-type"].startswith("application/soap+xml"), resp.text
        check(resp)


async def test_unexpected_error_is_a_receiver_fault(client, check, monkeypatch) -> None:
    from soap_edge import app as app_module

    def explode(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app_module, "_context", explode)
    resp = await post(
        client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]), message_id="urn:uuid:boom")
    )
    assert resp.status_code == 500
    assert fault_parts(resp)[0] == "env:Receiver"
    assert b"secret internal detail" not in resp.content and b"Traceback" not in resp.content
    assert check(resp).header("RelatesTo") == "urn:uuid:boom"


async def test_wsdl(client) -> None:
    for path, action in (
        ("/iti47", PDQ),
        ("/iti38", XCQ),
        ("/iti39", XCR),
        ("/iti55", "CrossGatewayPatientDiscovery"),
        ("/xca", XCR),
    ):
        resp = await client.get(f"{path}?wsdl")
        assert resp.status_code == 200
        root = etree.fromstring(resp.content)
        wsdl = {
            "w": "http://schemas.xmlsoap.org/wsdl/",
            "s12": "http://schemas.xmlsoap.org/wsdl/soap12/",
        }
        assert (
            root.xpath("string(//w:service/w:port/s12:address/@location)", namespaces=wsdl)
            == f"http://soap-edge.test{path}"
        )
        assert action in resp.text
    client.app.state.settings.public_base_url = "https://gw.example.nhs.uk/"
    resp = await client.get("/iti38?wsdl")
    assert 'location="https://gw.example.nhs.uk/iti38"' in resp.text


def test_fault_status_mapping() -> None:
    assert SoapFault(FaultCode.SENDER, "x").status == 400
    assert SoapFault(FaultCode.RECEIVER, "x").status == 500
    assert SoapFault(FaultCode.MUST_UNDERSTAND, "x").status == 500
    assert read_response is not None
