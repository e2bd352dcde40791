"""ITI-55 XCPD specifics over the HTTP endpoint (real Redis, sandbox-shaped fake PDS).

- "More attributes requested" and "problem handling the request" (ITI TF-2b 3.55.4.2.2.6-7,
  Case 3 and Case 5 of 3.55.4.2.3), checked against the official HL7 V3 schemas.
- The initiating community's own patient id next to the demographics (3.55.1 "Demographic
  Query and Feed", 3.55.4.1.2.1 LivingSubjectId).
- An unmapped CEID plus demographics: searched, and paired when exactly one patient matches.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from soap_edge_testkit import (
    CEID_OID,
    JANE,
    NHS_OID,
    Conformance,
    envelope,
    pdq_body,
    post,
)

from soap_edge.store import key
from xcagw_common.testing import RedisServer

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCPD = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
REQUESTED_SYSTEM = "1.3.6.1.4.1.19376.1.2.27.1"
ISSUE_SYSTEM = "1.3.6.1.4.1.19376.1.2.27.3"
EVENT = "//h:controlActProcess/h:reasonOf/h:detectedIssueEvent"
# The partner of the development settings (conftest DEV_PARTNERS): pairings are stored under it.
PARTNER = "anonymous"
# An initiating community's own patient id domain, not one of settings.ceid_domains.
THEIR_DOMAIN = "1.2.840.114350.1.13.99997.2.3412"


async def xcpd(client: Any, check: Any, **kwargs: Any) -> Any:
    resp = await post(client, "/iti55", envelope(XCPD, pdq_body(**kwargs)))
    assert resp.status_code == 200, resp.text
    return check(resp)


async def pdq(client: Any, check: Any, **kwargs: Any) -> Any:
    resp = await post(client, "/iti47", envelope(PDQ, pdq_body(**kwargs)))
    assert resp.status_code == 200, resp.text
    return check(resp)


def codes(parsed: Any) -> tuple[str, str]:
    return (
        parsed.xpath("string(//h:acknowledgement/h:typeCode/@code)"),
        parsed.xpath("string(//h:queryAck/h:queryResponseCode/@code)"),
    )


def patient_ids(parsed: Any) -> list[str]:
    return [str(x) for x in parsed.xpath("//h:subject1/h:patient/h:id/@extension")]


def requested(parsed: Any) -> list[tuple[str, str]]:
    """(code, codeSystem) of every triggerFor/actOrderRequired, in order."""
    codes_ = parsed.xpath(f"{EVENT}/h:triggerFor/h:actOrderRequired/h:code")
    return [(c.get("code"), c.get("codeSystem")) for c in codes_]


def local_name(el: Any) -> str:
    return str(el.tag).rsplit("}", 1)[-1]


@pytest.fixture(autouse=True)
def schemas_present(conformance: Conformance) -> None:
    # The `check` fixture skips the XSDs when the shared checker is missing; these tests are
    # about schema-valid structure, so they must not pass without it.
    assert conformance.available


# ---- More attributes requested / problems (ITI TF-2b 3.55.4.2.2.6, 3.55.4.2.2.7) ----------------
async def test_too_many_matches_asks_for_the_missing_attributes(client, check, fakes) -> None:
    # Family name and birth date only; PDS answers TOO_MANY_MATCHES (the fake's "Jones").
    parsed = await xcpd(client, check, family="Jones", birth="19700101")
    # Case 3 (3.55.4.2.3): AA/OK, no RegistrationEvent, and the attributes that may give a match.
    assert codes(parsed) == ("AA", "OK")
    assert parsed.xpath("count(//h:subject)") == 0
    assert parsed.xpath("string(//h:queryAck/h:statusCode/@code)") == "deliveredResponse"
    assert requested(parsed) == [
        ("LivingSubjectAdministrativeGenderRequested", REQUESTED_SYSTEM),
        ("PatientAddressRequested", REQUESTED_SYSTEM),
    ]
    triggers = parsed.xpath(f"{EVENT}/h:triggerFor")
    assert [t.get("typeCode") for t in triggers] == ["TRIG", "TRIG"]
    orders = parsed.xpath(f"{EVENT}/h:triggerFor/h:actOrderRequired")
    assert {(o.get("classCode"), o.get("moodCode")) for o in orders} == {("ACT", "RQO")}
    # "Requested" codes are not problems: nothing under mitigatedBy, nothing in system 27.3.
    assert parsed.xpath(f"count({EVENT}/h:mitigatedBy)") == 0
    assert ISSUE_SYSTEM.encode() not in parsed.raw
    event = parsed.xpath(EVENT)[0]
    assert (event.get("classCode"), event.get("moodCode")) == ("ALRT", "EVN")
    assert parsed.xpath(f"string({EVENT}/h:code/@codeSystem)") == "2.16.840.1.113883.5.4"
    # reasonOf sits before queryAck (MFMI_MT700711UV01.ControlActProcess).
    cap = parsed.xpath("//h:controlActProcess")[0]
    order = [local_name(c) for c in cap]
    assert order.index("reasonOf") < order.index("queryAck")
    assert fakes.state.calls["SearchPatients"] == 1


async def test_too_many_matches_asks_only_for_what_is_missing(client, check) -> None:
    parsed = await xcpd(client, check, family="Jones", birth="19700101", gender="F")
    assert codes(parsed) == ("AA", "OK")
    assert requested(parsed) == [("PatientAddressRequested", REQUESTED_SYSTEM)]


async def test_too_many_matches_with_nothing_left_to_ask_is_answer_not_available(
    client, check
) -> None:
    parsed = await xcpd(
        client, check, family="Jones", birth="19700101", gender="M", postal="LS1 6AE"
    )
    # Case 5 (3.55.4.2.3) with the 3.55.4.2.2.7 code: AE/AE, mitigatedBy AnswerNotAvailable.
    assert codes(parsed) == ("AE", "AE")
    assert parsed.xpath("count(//h:subject)") == 0
    assert parsed.xpath("string(//h:queryAck/h:statusCode/@code)") == "aborted"
    assert requested(parsed) == []
    management = parsed.xpath(f"{EVENT}/h:mitigatedBy/h:detectedIssueManagement")
    assert len(management) == 1
    assert (management[0].get("classCode"), management[0].get("moodCode")) == ("ACT", "EVN")
    assert parsed.xpath(f"string({EVENT}/h:mitigatedBy/@typeCode)") == "MITGT"
    code = parsed.xpath(f"{EVENT}/h:mitigatedBy/h:detectedIssueManagement/h:code")[0]
    assert (code.get("code"), code.get("codeSystem")) == ("AnswerNotAvailable", ISSUE_SYSTEM)
    # The query is still echoed so the initiator can tell which request this answers.
    assert parsed.xpath("count(//h:controlActProcess/h:queryByParameter)") == 1


async def test_pdq_too_many_matches_stays_nf_without_xcpd_codes(client, check) -> None:
    # PDQv3 has no "refine the query" mechanism: ITI-47 answers NF and nothing else.
    parsed = await pdq(client, check, family="Jones", birth="19700101")
    assert codes(parsed) == ("AA", "NF")
    assert parsed.xpath("count(//h:reasonOf)") == 0


async def test_xcpd_query_ack_has_no_quantities_and_ignores_initial_quantity(client, check) -> None:
    # Table 3.55.4.2.2.3-1: the QueryAck quantities shall not be populated; Table
    # 3.55.4.1.2.2-1: initialQuantity is not supported and is ignored by the responder.
    parsed = await xcpd(client, check, family="Multi", birth="1970", initial_quantity=1)
    assert codes(parsed) == ("AA", "OK")
    assert len(patient_ids(parsed)) == 3
    for name in ("resultTotalQuantity", "resultCurrentQuantity", "resultRemainingQuantity"):
        assert parsed.xpath(f"count(//h:queryAck/h:{name})") == 0, name
    # ITI-47 keeps paging (Continuation option) and its quantities.
    parsed = await pdq(client, check, family="Multi", birth="1970", initial_quantity=1)
    assert len(patient_ids(parsed)) == 1
    assert parsed.xpath("string(//h:queryAck/h:resultRemainingQuantity/@value)") == "2"


# ---- Initiating community ids and unmapped CEIDs -----------------------------------------------
async def test_initiating_community_id_next_to_demographics_is_not_an_error(
    client, check, redis_server: RedisServer
) -> None:
    # Demographic Query and Feed (3.55.1): the initiator's own id, designated through
    # authorOrPerformer/assignedDevice/id (3.55.4.1.2.4), travels with the demographics.
    parsed = await xcpd(
        client,
        check,
        ids=[(THEIR_DOMAIN, "1234")],
        family="Smith",
        birth="20101022",
        xcpd_initiator=THEIR_DOMAIN,
    )
    assert codes(parsed) == ("AA", "OK") and patient_ids(parsed) == [JANE]
    assert parsed.xpath("count(//h:acknowledgementDetail)") == 0
    # Not a configured CEID domain: nothing is paired for it (ITI-38 could not use it anyway).
    r = redis.Redis(port=redis_server.port)
    assert not r.keys(key("ceid", PARTNER, THEIR_DOMAIN, "*"))
    assert not r.keys(key("nhs-ceid", PARTNER, "*"))
    # Next to an NHS number (the shared identifier) it is likewise just carried along.
    parsed = await xcpd(client, check, ids=[(THEIR_DOMAIN, "1234"), (NHS_OID, JANE)])
    assert codes(parsed) == ("AA", "OK") and patient_ids(parsed) == [JANE]


async def test_unknown_domain_id_alone_is_still_ae_204(client, check) -> None:
    # Nothing else to match on: the id is the whole query, and we do not know its domain.
    parsed = await xcpd(client, check, ids=[(THEIR_DOMAIN, "1234")])
    assert codes(parsed) == ("AE", "AE")
    assert parsed.xpath("string(//h:acknowledgementDetail/h:code/@code)") == "204"
    assert "livingSubjectId[1]" in parsed.xpath("string(//h:acknowledgementDetail/h:location)")


async def test_pdq_keeps_ae_204_for_an_unknown_domain_with_demographics(client, check) -> None:
    # ITI TF-2b 3.47.4.2.3 case 3: a PDQv3 supplier reports an unrecognised domain.
    parsed = await pdq(
        client, check, ids=[(THEIR_DOMAIN, "1234")], family="Smith", birth="20101022"
    )
    assert codes(parsed) == ("AE", "AE")
    assert parsed.xpath("string(//h:acknowledgementDetail/h:code/@code)") == "204"


@pytest.mark.parametrize("send", [xcpd, pdq], ids=["ITI-55", "ITI-47"])
async def test_unmapped_ceid_with_demographics_is_searched_and_paired(
    client, check, fakes, redis_server: RedisServer, send
) -> None:
    parsed = await send(
        client, check, ids=[(CEID_OID, "EPIC-NEW")], family="Smith", birth="20101022"
    )
    assert codes(parsed) == ("AA", "OK") and patient_ids(parsed) == [JANE]
    assert fakes.state.calls["SearchPatients"] == 1
    # Exactly one match: the pairing is stored for this partner and returned among the ids.
    r = redis.Redis(port=redis_server.port)
    assert r.get(key("ceid", PARTNER, CEID_OID, "EPIC-NEW")) == JANE.encode()
    assert r.get(key("nhs-ceid", PARTNER, JANE, CEID_OID)) == b"EPIC-NEW"
    assert parsed.xpath(f"string(//h:asOtherIDs/h:id[@root='{CEID_OID}']/@extension)") == "EPIC-NEW"
    # The CEID alone now finds the patient, without another search.
    parsed = await send(client, check, ids=[(CEID_OID, "EPIC-NEW")])
    assert codes(parsed) == ("AA", "OK") and patient_ids(parsed) == [JANE]
    assert fakes.state.calls["SearchPatients"] == 1


@pytest.mark.parametrize(
    ("demographics", "expected"),
    [
        ({"family": "Multi", "birth": "1970"}, ("AA", "OK")),  # three matches: no pairing
        ({"family": "Smythe", "birth": "20050616"}, ("AA", "NF")),  # restricted: hidden
        ({"family": "Nobody", "birth": "19500101"}, ("AA", "NF")),  # no match
    ],
)
async def test_unmapped_ceid_is_paired_only_on_exactly_one_match(
    client, check, redis_server: RedisServer, demographics, expected
) -> None:
    parsed = await xcpd(client, check, ids=[(CEID_OID, "EPIC-AMBIG")], **demographics)
    assert codes(parsed) == expected
    assert b"Janet" not in parsed.raw
    r = redis.Redis(port=redis_server.port)
    assert not r.keys(key("ceid", "*"))
    assert not r.keys(key("nhs-ceid", "*"))


async def test_unmapped_ceid_with_too_few_demographics_is_nf_without_a_search(
    client, check, fakes
) -> None:
    # No family name and birth date to search PDS with: the CEID is simply unknown (NF), not a
    # malformed query.
    parsed = await xcpd(client, check, ids=[(CEID_OID, "EPIC-NEW")], gender="F")
    assert codes(parsed) == ("AA", "NF")
    assert fakes.state.calls["SearchPatients"] == 0


async def test_mapped_ceid_wins_over_the_demographic_search(client, check, fakes) -> None:
    paired = await pdq(client, check, ids=[(NHS_OID, JANE), (CEID_OID, "EPIC-OLD")])
    assert codes(paired) == ("AA", "OK")
    parsed = await xcpd(
        client, check, ids=[(CEID_OID, "EPIC-OLD")], family="Smith", birth="20101022"
    )
    assert codes(parsed) == ("AA", "OK") and patient_ids(parsed) == [JANE]
    assert fakes.state.calls["SearchPatients"] == 0
