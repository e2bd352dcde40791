"""CEID -> NHS number pairings belong to the partner that made them (two real partners, mTLS
identity via the trusted proxy header, real Redis).

A CEID (e.g. an Epic Care Everywhere id) is only what the sending partner says it is; if the
pairing were gateway-wide, partner B could point partner A's CEID at any NHS number B knows and
A's next ITI-38 by that CEID would fetch that patient's record.
"""

from __future__ import annotations

from typing import Any

import httpx
import redis
from soap_edge_security_kit import (  # fixtures are imported to be registered here
    Pki,
    app_factory,
    cert_header,
    pki,
    send,
)
from soap_edge_testkit import (
    CEID_OID,
    JANE,
    JAYNE,
    NHS_OID,
    FakeBackends,
    find_documents,
    pdq_body,
    read_response,
)

from soap_edge.security.partners import fingerprint
from soap_edge.store import key
from xcagw_common.testing import RedisServer

__all__ = ["app_factory", "pki"]  # imported fixtures, used by name

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
CEID = "EPIC-A1"
# Partner id -> the Pki attribute holding its client certificate.
CERTS = {"epic": "partner", "other": "stranger"}


def two_partners(pki: Pki) -> dict[str, Any]:
    """ "epic" (client certificate pki.partner) and "other" (pki.stranger); no XUA required."""

    def partner(partner_id: str, cert: Any) -> dict[str, Any]:
        return {
            "id": partner_id,
            "client_certificates": [{"sha256": fingerprint(cert)}],
            "transactions": ["ITI-38", "ITI-47", "ITI-55"],
            "saml": {"required": False},
        }

    return {"partners": [partner(p, getattr(pki, attr).cert) for p, attr in CERTS.items()]}


async def pdq(client: httpx.AsyncClient, pki: Pki, who: str, **kwargs: Any) -> Any:
    resp = await send(
        client, "/iti47", PDQ, pdq_body(**kwargs), headers=cert_header(pki, CERTS[who])
    )
    assert resp.status_code == 200, resp.text
    return read_response(resp)


async def find_by_ceid(client: httpx.AsyncClient, pki: Pki, who: str) -> Any:
    body = find_documents(CEID, oid=CEID_OID)
    resp = await send(client, "/iti38", XCQ, body, headers=cert_header(pki, CERTS[who]))
    assert resp.status_code == 200, resp.text
    return read_response(resp)


def ack(parsed: Any) -> tuple[str, str]:
    return (
        parsed.xpath("string(//h:acknowledgement/h:typeCode/@code)"),
        parsed.xpath("string(//h:queryAck/h:queryResponseCode/@code)"),
    )


def patient_info(parsed: Any) -> str:
    return str(parsed.xpath("string(//rim:ExtrinsicObject/rim:Slot[@name='sourcePatientInfo'])"))


async def test_a_partner_cannot_resolve_or_redirect_another_partners_ceid(
    app_factory: Any, pki: Pki, fakes: FakeBackends, redis_server: RedisServer
) -> None:
    async with app_factory(partner_registry=two_partners(pki)) as client:
        # epic pairs its CEID with Jane.
        paired = await pdq(client, pki, "epic", ids=[(NHS_OID, JANE), (CEID_OID, CEID)])
        assert ack(paired) == ("AA", "OK")

        # other cannot use epic's pairing: not by ITI-38, not by ITI-47 ...
        found = await find_by_ceid(client, pki, "other")
        assert found.xpath("string(//query:AdhocQueryResponse/@status)") == FAILURE
        assert found.xpath("string(//rs:RegistryError/@errorCode)") == "XDSUnknownPatientId"
        assert fakes.state.calls["GetStructuredRecord"] == 0
        assert ack(await pdq(client, pki, "other", ids=[(CEID_OID, CEID)])) == ("AA", "NF")
        # ... nor see epic's CEID for Jane among the other ids.
        jane = await pdq(client, pki, "other", ids=[(NHS_OID, JANE)], other_ids=[CEID_OID])
        assert ack(jane) == ("AA", "OK") and jane.xpath("count(//h:asOtherIDs)") == 0

        # other sends the same CEID with Jayne's NHS number: that is other's own pairing ...
        redirect = await pdq(client, pki, "other", ids=[(NHS_OID, JAYNE), (CEID_OID, CEID)])
        assert ack(redirect) == ("AA", "OK")

        # ... and epic's CEID still means Jane for epic.
        found = await find_by_ceid(client, pki, "epic")
        assert found.xpath("string(//query:AdhocQueryResponse/@status)") == SUCCESS
        assert "Smith^Jane" in patient_info(found) and "Jayne" not in patient_info(found)
        by_ceid = await pdq(client, pki, "epic", ids=[(CEID_OID, CEID)])
        assert by_ceid.xpath("//h:subject1/h:patient/h:id/@extension") == [JANE]
        mine = await pdq(client, pki, "epic", ids=[(NHS_OID, JANE)], other_ids=[CEID_OID])
        assert mine.xpath(f"string(//h:asOtherIDs/h:id[@root='{CEID_OID}']/@extension)") == CEID

        # other's pairing works for other only.
        found = await find_by_ceid(client, pki, "other")
        assert "Smyth^Jayne" in patient_info(found) and "Jane" not in patient_info(found)

    r = redis.Redis(port=redis_server.port)
    day = 24 * 3600
    assert r.get(key("ceid", "epic", CEID_OID, CEID)) == JANE.encode()
    assert r.get(key("ceid", "other", CEID_OID, CEID)) == JAYNE.encode()
    assert r.get(key("nhs-ceid", "epic", JANE, CEID_OID)) == CEID.encode()
    assert r.get(key("nhs-ceid", "other", JANE, CEID_OID)) is None
    for k in (key("ceid", "epic", CEID_OID, CEID), key("nhs-ceid", "other", JAYNE, CEID_OID)):
        assert 29 * day < r.ttl(k) <= 30 * day, k
    assert not r.keys(key("ceid", CEID_OID, "*"))  # no gateway-wide pairing any more
