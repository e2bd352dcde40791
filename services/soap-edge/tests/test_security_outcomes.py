"""soap-edge with its security layer on: what the partner and the ARR see for edge cases.

- XUA instants at the ends of xs:dateTime's range are judged, never an internal error (500).
- A PDQ/XCPD query that matches nobody (AA/NF) succeeded and is audited as such.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from lxml import etree
from soap_edge_security_kit import (  # fixtures are imported to be registered here
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
from soap_edge_testkit import INVALID, JANE, NHS_OID, UNKNOWN, find_documents, pdq_body

from xcagw_devstack.syslog_sink import SyslogSink

__all__ = ["app_factory", "arr", "pki"]  # imported fixtures, used by name

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCPD = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"


async def test_never_expiring_assertion_is_served_and_a_year_one_one_is_a_sender_fault(
    app_factory: Any, pki: Pki
) -> None:
    never = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    year_one = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    ancient = sign(
        build_assertion(
            attributes=default_attributes(JANE), issue_instant=year_one, not_before=year_one
        ),
        pki.issuer,
    )
    # With the verified-assertion cache on, so its expiry arithmetic is exercised too.
    async with app_factory(xua_verified_cache_seconds=60.0) as client:
        for _ in range(2):
            resp = await send(
                client,
                "/iti38",
                XCQ,
                find_documents(JANE),
                assertions=(good_assertion(pki, not_on_or_after=never),),
                headers=cert_header(pki),
            )
            assert resp.status_code == 200, resp.text
        resp = await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JANE),
            assertions=(ancient,),
            headers=cert_header(pki),
        )
    assert resp.status_code == 400, resp.text
    assert fault(resp)[:2] == ("env:Sender", "wsse:FailedAuthentication")


async def test_no_match_pdq_and_xcpd_are_audited_as_success(
    app_factory: Any, pki: Pki, arr: SyslogSink
) -> None:
    partner_registry = registry(pki, transactions=["ITI-38", "ITI-39", "ITI-47", "ITI-55"])
    settings = {**arr_settings(pki, arr), "partner_registry": partner_registry}
    async with app_factory(**settings) as client:
        replies = []
        for path, action, ids in (
            ("/iti47", PDQ, [(NHS_OID, UNKNOWN)]),  # AA/NF: PDS does not know the number
            ("/iti55", XCPD, [(NHS_OID, UNKNOWN)]),  # the same over XCPD
            ("/iti47", PDQ, [(NHS_OID, INVALID)]),  # AE/QE: a bad parameter is a failure
        ):
            resp = await send(
                client,
                path,
                action,
                pdq_body(ids=ids),
                # resource-id names the queried patient, as the partner's IdP would.
                assertions=(good_assertion(pki, ids[0][1]),),
                headers=cert_header(pki),
            )
            assert resp.status_code == 200, resp.text
            root = etree.fromstring(resp.content)
            replies.append(
                root.xpath(
                    "string(//h:queryAck/h:queryResponseCode/@code)",
                    namespaces={"h": "urn:hl7-org:v3"},
                )
            )
        assert replies == ["NF", "NF", "QE"]
        messages = await asyncio.to_thread(arr.wait_for, 3)
    docs = [etree.fromstring(m.msg) for m in messages]
    types = [d.find("EventIdentification/EventTypeCode").get("csd-code") for d in docs]
    assert types == ["ITI-47", "ITI-55", "ITI-47"]
    # DICOM PS3.15 A.5.3: 0 success; 8 serious failure.
    outcomes = [d.find("EventIdentification").get("EventOutcomeIndicator") for d in docs]
    assert outcomes == ["0", "0", "8"]
