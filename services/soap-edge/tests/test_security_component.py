"""soap-edge with its security layer on: partner registry, mTLS identity (via a trusted proxy
header, the ASGI transport has no TLS), XUA, rate limits and ATNA audit to a TLS syslog ARR.

Every negative is a specific fault and reaches no backend (the fakes' call counters stay 0).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree
from soap_edge_security_kit import (  # fixtures are imported to be registered here
    DS,
    NOW,
    PARTNER_HCID,
    PURPOSE,
    SAML2,
    Pki,
    app_factory,
    arr,
    arr_settings,
    build_assertion,
    cert_header,
    default_attributes,
    fault,
    good_assertion,
    pki,
    registry,
    send,
    sign,
)
from soap_edge_testkit import (
    HCID,
    JANE,
    JAYNE,
    NHS_OID,
    REPO,
    UNIQUE_ID,
    FakeBackends,
    find_documents,
    pdq_body,
    read_response,
    retrieve_body,
)

from soap_edge.config import Settings
from xcagw_common.testing import RedisServer, shared_dir
from xcagw_devstack.syslog_sink import SyslogSink

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"

__all__ = ["app_factory", "arr", "pki"]  # imported fixtures, used by name


# ---- the good path: verified identity into the backends and the GP Connect JWT ---------------
async def test_verified_identity_reaches_the_backends_and_the_gp_connect_jwt(
    app_factory: Any, pki: Pki, fakes: FakeBackends, check: Any
) -> None:
    async with app_factory() as client:
        resp = await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JANE),
            assertions=(good_assertion(pki),),
            headers=cert_header(pki),
        )
        assert resp.status_code == 200, resp.text
        check(resp)
    ctx = fakes.state.last_context  # the context GP Connect (and so token-service) received
    assert ctx.partner_id == "epic"
    assert ctx.user_id == "CONE, Stephen" and ctx.user_name == "CONE, Stephen"
    assert ctx.user_role == "224608005"
    assert ctx.organization_name == "UCLH - University College London Hospitals - TST"
    assert ctx.organization_id == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
    assert ctx.purpose_of_use == "TREATMENT"
    assert ctx.home_community_id == PARTNER_HCID
    assert ctx.transaction == "ITI-38"
    try:
        from token_service.config import Settings as TokenSettings
        from token_service.gpconnect import build_claims
    except ImportError:  # pragma: no cover - token-service is part of the workspace
        pytest.skip("token-service not installed")
    token_settings = TokenSettings(
        gpc_issuer="https://gateway.example",
        gpc_consumer_asid="200000000359",
        gpc_default_ods_code="Y12345",
        auto_generate_key=True,
    )
    claims = build_claims(token_settings, ctx, "https://provider.example/fhir", "", 1_700_000_000)
    practitioner = claims["requesting_practitioner"]
    assert practitioner["name"][0]["family"] == "CONE"
    assert claims["requesting_organization"]["name"].startswith("UCLH")


# ---- negatives: each a specific fault, nothing reaches a backend --------------------------------
def _two(pki: Pki) -> tuple[etree._Element, ...]:
    return (good_assertion(pki), good_assertion(pki))


def _tampered(pki: Pki) -> tuple[etree._Element, ...]:
    # Signature wrapping: a forged assertion (new ID, new subject) carries a genuine signature
    # whose Reference still names the genuine assertion's ID.
    forged = good_assertion(pki)
    forged.set("ID", "_forged")
    forged.find(f".//{{{SAML2}}}AttributeValue").text = "Evil, Mallory"
    return (forged,)


def _unsigned(pki: Pki) -> tuple[etree._Element, ...]:
    a = build_assertion()
    a.remove(a.find(f"{{{DS}}}Signature"))
    return (a,)


def _no_purpose(pki: Pki) -> tuple[etree._Element, ...]:
    attrs = default_attributes()
    del attrs[PURPOSE]
    return (sign(build_assertion(attributes=attrs), pki.issuer),)


NEGATIVES: dict[str, tuple[Callable[[Pki], tuple[etree._Element, ...]], str, str, str]] = {
    "unsigned": (_unsigned, "wsse:InvalidSecurity", "not signed", "partner"),
    "tampered": (_tampered, "wsse:InvalidSecurity", "signature is not valid", "partner"),
    "expired": (
        lambda p: (
            good_assertion(
                p,
                issue_instant=NOW - dt.timedelta(hours=2),
                not_on_or_after=NOW - dt.timedelta(hours=1),
            ),
        ),
        "wsse:FailedAuthentication",
        "expired",
        "partner",
    ),
    "future": (
        lambda p: (
            good_assertion(
                p,
                not_before=NOW + dt.timedelta(hours=1),
                not_on_or_after=NOW + dt.timedelta(hours=2),
            ),
        ),
        "wsse:FailedAuthentication",
        "not valid yet",
        "partner",
    ),
    "wrong audience": (
        lambda p: (good_assertion(p, audiences=["https://other.example/xca"]),),
        "wsse:FailedAuthentication",
        "AudienceRestriction",
        "partner",
    ),
    "untrusted issuer": (
        lambda p: (sign(build_assertion(), p.rogue_issuer),),
        "wsse:FailedAuthentication",
        "issuer trusted",
        "partner",
    ),
    "two assertions": (_two, "wsse:InvalidSecurity", "exactly one", "partner"),
    "missing purpose of use": (
        _no_purpose,
        "wsse:FailedAuthentication",
        "purpose of use",
        "partner",
    ),
    "no assertion": (lambda p: (), "wsse:InvalidSecurity", "assertion is required", "partner"),
    "unknown partner cert": (
        lambda p: (good_assertion(p),),
        "wsse:FailedAuthentication",
        "not registered for any partner",
        "stranger",
    ),
    "no client cert": (
        lambda p: (good_assertion(p),),
        "wsse:FailedAuthentication",
        "client certificate is required",
        "",
    ),
}


@pytest.mark.parametrize("case", list(NEGATIVES))
async def test_refusals_are_specific_faults_and_reach_no_backend(
    case: str, app_factory: Any, pki: Pki, fakes: FakeBackends, check: Any
) -> None:
    build, subcode, reason, cert = NEGATIVES[case]
    async with app_factory() as client:
        resp = await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JANE),
            assertions=build(pki),
            headers=cert_header(pki, cert) if cert else None,
        )
    assert resp.status_code == 400, resp.text
    code, sub, text = fault(resp)
    assert (code, sub) == ("env:Sender", subcode)
    assert reason in text
    assert JANE.encode() not in resp.content
    check(resp)
    assert sum(fakes.state.calls.values()) == 0, fakes.state.calls


async def test_transaction_not_allowed_for_the_partner(
    app_factory: Any, pki: Pki, fakes: FakeBackends
) -> None:
    async with app_factory() as client:
        resp = await send(
            client,
            "/xca",
            "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
            pdq_body(ids=[(NHS_OID, JANE)]),
            assertions=(good_assertion(pki),),
            headers=cert_header(pki),
        )
    assert fault(resp)[1] == "wsse:FailedAuthentication"
    assert "not allowed to use this transaction" in fault(resp)[2]
    assert sum(fakes.state.calls.values()) == 0


async def test_resource_id_must_match_the_queried_patient(
    app_factory: Any, pki: Pki, fakes: FakeBackends
) -> None:
    async with app_factory() as client:
        resp = await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JAYNE),
            assertions=(good_assertion(pki, nhs=JANE),),
            headers=cert_header(pki),
        )
    assert fault(resp)[1] == "wsse:FailedAuthentication"
    assert "resource-id" in fault(resp)[2]
    assert sum(fakes.state.calls.values()) == 0


async def test_rate_limit_exceeded_is_a_retry_later_fault(
    app_factory: Any, pki: Pki, fakes: FakeBackends, check: Any
) -> None:
    limited = registry(pki, rate_limit={"per_second": 0.01, "burst": 2})
    async with app_factory(partner_registry=limited) as client:
        for _ in range(2):
            ok = await send(
                client,
                "/iti47",
                PDQ,
                pdq_body(ids=[(NHS_OID, JANE)]),
                assertions=(good_assertion(pki),),
                headers=cert_header(pki),
            )
            assert ok.status_code == 200, ok.text
        calls = dict(fakes.state.calls)
        resp = await send(
            client,
            "/iti47",
            PDQ,
            pdq_body(ids=[(NHS_OID, JANE)]),
            assertions=(good_assertion(pki),),
            headers=cert_header(pki),
        )
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 100
    code, sub, text = fault(resp)
    assert (code, sub) == ("env:Receiver", "xcagw:RateLimited")
    assert "retry after" in text
    check(resp)
    assert dict(fakes.state.calls) == calls  # the refused request reached nothing


def audit_xml(record: Any) -> etree._Element:
    return etree.fromstring(record.msg)


@pytest.fixture(scope="module")
def atna_schema() -> etree.XMLSchema | None:
    xsd = shared_dir() / "conformance/schemas/atna/dicom2017c.xsd"
    return etree.XMLSchema(etree.parse(str(xsd))) if xsd.exists() else None


async def test_one_audit_message_per_transaction(
    app_factory: Any, pki: Pki, arr: SyslogSink, atna_schema: Any
) -> None:
    async with app_factory(**arr_settings(pki, arr)) as client:
        headers = cert_header(pki)
        pdq = await send(
            client,
            "/iti47",
            PDQ,
            pdq_body(ids=[(NHS_OID, JANE)]),
            assertions=(good_assertion(pki),),
            headers=headers,
        )
        found = await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JANE),
            assertions=(good_assertion(pki),),
            headers=headers,
        )
        uid = read_response(found).xpath(UNIQUE_ID)
        got = await send(
            client,
            "/iti39",
            XCR,
            retrieve_body((HCID, REPO, uid)),
            assertions=(good_assertion(pki),),
            headers=headers,
        )
        refused = await send(client, "/iti38", XCQ, find_documents(JANE), headers=headers)
        assert [r.status_code for r in (pdq, found, got, refused)] == [200, 200, 200, 400]
        messages = await asyncio.to_thread(arr.wait_for, 4)
    assert len(messages) == 4
    assert all(m.msgid == "IHE+RFC-3881" and m.facility == 10 for m in messages)
    docs = [audit_xml(m) for m in messages]
    if atna_schema is not None:
        for doc in docs:
            assert atna_schema.validate(doc), atna_schema.error_log
    types = [d.find("EventIdentification/EventTypeCode").get("csd-code") for d in docs]
    assert types == ["ITI-47", "ITI-38", "ITI-39", "ITI-38"]
    outcomes = [d.find("EventIdentification").get("EventOutcomeIndicator") for d in docs]
    assert outcomes == ["0", "0", "0", "8"]
    jane_cx = f"{JANE}^^^&{NHS_OID}&ISO"
    for doc in docs[:3]:
        patients = [
            p.get("ParticipantObjectID")
            for p in doc.findall("ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
        ]
        assert patients == [jane_cx]
        person = doc.findall("ActiveParticipant")[1]
        assert person.get("UserName").startswith("CONE, Stephen<")
        source = doc.findall("ActiveParticipant")[0]
        assert source.get("AlternativeUserID") == "epic"
    retrieved = docs[2].find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert retrieved.get("ParticipantObjectID") == uid
    query = docs[1].find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    assert JANE.encode() in base64.b64decode(query.findtext("ParticipantObjectQuery"))
    # The refused request (no assertion) is audited too, without a human requestor.
    assert len(docs[3].findall("ActiveParticipant")) == 2


async def test_arr_outage_during_a_burst(
    app_factory: Any, pki: Pki, arr: SyslogSink, redis_server: RedisServer
) -> None:
    async with app_factory(**arr_settings(pki, arr)) as client:
        headers = cert_header(pki)

        async def pdq(i: int) -> None:
            resp = await send(
                client,
                "/iti47",
                PDQ,
                pdq_body(ids=[(NHS_OID, JANE)], query_ext=f"burst-{i:03d}"),
                assertions=(good_assertion(pki),),
                headers=headers,
            )
            assert resp.status_code == 200, resp.text

        await pdq(0)
        await asyncio.to_thread(arr.wait_for, 1)
        await _backlog_empty(redis_server)
        arr.stop()
        for i in range(1, 21):
            await pdq(i)  # the partner is answered while the ARR is down
        arr.start()
        messages = await asyncio.to_thread(arr.wait_for, 21, 30.0)
        await _backlog_empty(redis_server)
    ids = [
        audit_xml(m)
        .find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
        .get("ParticipantObjectID")
        for m in messages
    ]
    assert ids == [f"burst-{i:03d}@1.2.3.4.7" for i in range(21)]  # each once, in order
    assert arr.errors() == []


async def _backlog_empty(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis(port=redis_server.port)
    try:
        for _ in range(500):
            if await r.xlen("xcagw:soap-edge:{audit}:stream") == 0:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("audit backlog did not drain")
    finally:
        await r.aclose()


async def test_audit_buffer_unavailable_withholds_the_response(
    app_factory: Any, pki: Pki, arr: SyslogSink, fakes: FakeBackends
) -> None:
    async with app_factory(**arr_settings(pki, arr)) as client:
        security = client.app.state.security  # type: ignore[attr-defined]

        async def broken(record: Any) -> str:
            from soap_edge.security.audit import AuditUnavailable

            raise AuditUnavailable("ConnectionError")

        security.audit.enqueue = broken
        resp = await send(
            client,
            "/iti47",
            PDQ,
            pdq_body(ids=[(NHS_OID, JANE)]),
            assertions=(good_assertion(pki),),
            headers=cert_header(pki),
        )
    assert resp.status_code == 500
    assert fault(resp)[0] == "env:Receiver"
    assert JANE.encode() not in resp.content and b"Smith" not in resp.content


def test_missing_or_insecure_registry_stops_start_up(settings: Settings, pki: Pki) -> None:
    from soap_edge_security_kit import secure_settings

    from soap_edge.security.partners import PartnerConfigError
    from soap_edge.security.runtime import load_registry

    dev = {"anonymous_partner": "d", "partners": [{"id": "d", "saml": {"verify": False}}]}
    with pytest.raises(PartnerConfigError, match="ALLOW_INSECURE"):
        load_registry(secure_settings(settings, pki, partner_registry=dev))
    assert len(load_registry(secure_settings(settings, pki))) == 1


async def test_partner_listener_hides_internal_endpoints_from_other_networks(
    app_factory: Any,
) -> None:
    async with app_factory(internal_endpoint_cidrs=["10.0.0.0/8"]) as client:
        resp = await client.get("/health/live")
        assert resp.status_code == 404
        assert resp.headers["content-type"].startswith("application/soap+xml")
        metrics = await client.get("/metrics")
        assert metrics.status_code == 404
    async with app_factory() as client:  # default: loopback may read them
        assert (await client.get("/health/live")).status_code == 200
        soap = await client.get("/iti38?wsdl")
        assert soap.headers["x-content-type-options"] == "nosniff"
        assert "server" not in soap.headers


async def test_redis_outage_with_audit_on_is_still_a_registry_error(
    app_factory: Any, pki: Pki, arr: SyslogSink, redis_server: RedisServer
) -> None:
    """Nothing is disclosed, so the failure reply goes out although its audit record is lost."""
    async with app_factory(**arr_settings(pki, arr)) as client:
        redis_server.kill()
        try:
            resp = await send(
                client,
                "/iti38",
                XCQ,
                find_documents(JANE),
                assertions=(good_assertion(pki),),
                headers=cert_header(pki),
            )
        finally:
            redis_server.start()
    assert resp.status_code == 200, resp.text
    parsed = read_response(resp)
    assert parsed.xpath("string(//rs:RegistryError/@errorCode)") == "XDSRegistryError"
