"""ATNA audit: DICOM messages valid against the ATNA schema, RFC 5424/5425 syslog over TLS,
durable Redis buffer, in-order delivery across ARR outages and replicas."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from prometheus_client import REGISTRY
from soap_edge_security_kit import NOW, Pki

from soap_edge.security.audit import (
    STREAM_KEY,
    ArrEndpoint,
    AuditForwarder,
    AuditQueue,
    AuditRecord,
    AuditSource,
    AuditUnavailable,
    DocumentRef,
    build_audit_message,
    frame,
    patient_cx,
    render,
)
from soap_edge.security.xua import Coded, XuaIdentity
from xcagw_common.redis import create_redis
from xcagw_common.testing import RedisServer, shared_dir
from xcagw_devstack.syslog_sink import SyslogSink, parse_message

NHS = "9000000009"
SOURCE = AuditSource(
    source_id="xcagw-test",
    enterprise_site_id="urn:oid:2.16.840.1.113883.2.1.3.34.9001",
    hostname="gw-1.test",
    process_id="4242",
)


def human() -> XuaIdentity:
    return XuaIdentity(
        assertion_id="_a1",
        issuer="https://idp.partner.example",
        name_id="user-42@partner.example",
        subject_id="CONE, Stephen",
        organization="UCLH",
        organization_id="urn:oid:1.2.3",
        role=Coded("224608005", "2.16.840.1.113883.6.96", "SNOMED_CT", "Admin staff"),
        purposes_of_use=(Coded("TREATMENT", "2.16.840.1.113883.3.18.7.1", "", "Treatment"),),
        home_community_id="urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100",
        resource_id=f"{NHS}^^^&2.16.840.1.113883.2.1.4.1&ISO",
        npi="",
        not_on_or_after=NOW,
        subject_confirmation="urn:oasis:names:tc:SAML:2.0:cm:bearer",
        issuer_certificate_sha256="00",
    )


def record(transaction: str, **extra: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "transaction": transaction,
        "event_time": NOW,
        "source_reply_to": "http://www.w3.org/2005/08/addressing/anonymous",
        "source_ip": "10.1.2.3",
        "partner_id": "epic",
        "destination_url": "https://gw.example/xca",
        "human": human(),
        "patients": [patient_cx(NHS)],
        "home_community_id": "urn:oid:2.16.840.1.113883.2.1.3.34.9001",
    }
    if transaction in ("ITI-38", "ITI-18", "ITI-47", "ITI-55"):
        values["query_id"] = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
        values["query"] = (
            b"<AdhocQueryRequest xmlns='urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0'/>"
        )
    if transaction in ("ITI-39", "ITI-43"):
        values["documents"] = [
            DocumentRef(
                "1.2.3.4.1",
                "2.16.840.1.113883.2.1.3.34.9001.2",
                "urn:oid:2.16.840.1.113883.2.1.3.34.9001",
            ),
            DocumentRef(
                "1.2.3.4.2",
                "2.16.840.1.113883.2.1.3.34.9001.2",
                "urn:oid:2.16.840.1.113883.2.1.3.34.9001",
            ),
        ]
    values.update(extra)
    return AuditRecord(**values)


@pytest.fixture(scope="module")
def atna_schema() -> etree.XMLSchema:
    xsd = shared_dir() / "conformance/schemas/atna/dicom2017c.xsd"
    if not xsd.exists():
        pytest.skip(f"ATNA schema not found at {xsd}")
    return etree.XMLSchema(etree.parse(str(xsd)))


# ---- the DICOM message --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "transaction", ["ITI-38", "ITI-18", "ITI-39", "ITI-43", "ITI-47", "ITI-55"]
)
def test_message_is_valid_against_the_atna_schema(
    transaction: str, atna_schema: etree.XMLSchema
) -> None:
    message = build_audit_message(record(transaction), SOURCE)
    assert atna_schema.validate(message), atna_schema.error_log


def test_valid_without_xua_and_on_failure(atna_schema: etree.XMLSchema) -> None:
    message = build_audit_message(
        record("ITI-38", human=None, outcome=8, outcome_description="XDSRegistryError"), SOURCE
    )
    assert atna_schema.validate(message), atna_schema.error_log
    assert message.find("EventIdentification").get("EventOutcomeIndicator") == "8"


def test_iti38_participants_and_objects() -> None:
    message = build_audit_message(record("ITI-38"), SOURCE)
    ident = message.find("EventIdentification")
    assert ident.get("EventActionCode") == "E"
    assert ident.find("EventID").get("csd-code") == "110112"
    assert ident.find("EventTypeCode").get("csd-code") == "ITI-38"
    assert ident.find("PurposeOfUse").get("csd-code") == "TREATMENT"
    participants = message.findall("ActiveParticipant")
    roles = [p.findtext("RoleIDCode") for p in participants]
    assert len(participants) == 3
    source, person, dest = participants
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    assert source.get("NetworkAccessPointID") == "10.1.2.3"
    assert source.get("UserIsRequestor") == "true"
    assert (
        person.get("UserName")
        == "CONE, Stephen<user-42@partner.example@https://idp.partner.example>"
    )
    assert person.find("RoleIDCode").get("csd-code") == "224608005"
    assert dest.find("RoleIDCode").get("csd-code") == "110152"
    assert dest.get("UserID") == "https://gw.example/xca"
    assert dest.get("UserIsRequestor") == "false"
    assert roles  # every participant has a role
    objects = message.findall("ParticipantObjectIdentification")
    patient, query = objects
    assert patient.get("ParticipantObjectID") == f"{NHS}^^^&2.16.840.1.113883.2.1.4.1&ISO"
    assert (
        patient.get("ParticipantObjectTypeCode"),
        patient.get("ParticipantObjectTypeCodeRole"),
    ) == ("1", "1")
    assert query.get("ParticipantObjectTypeCodeRole") == "24"
    assert query.find("ParticipantObjectIDTypeCode").get("csd-code") == "ITI-38"
    assert base64.b64decode(query.findtext("ParticipantObjectQuery")).startswith(
        b"<AdhocQueryRequest"
    )
    details = {
        d.get("type"): base64.b64decode(d.get("value")).decode()
        for d in query.findall("ParticipantObjectDetail")
    }
    assert details == {
        "QueryEncoding": "UTF-8",
        "ihe:homeCommunityID": "urn:oid:2.16.840.1.113883.2.1.3.34.9001",
    }


def test_iti39_has_one_document_object_per_document() -> None:
    message = build_audit_message(record("ITI-39"), SOURCE)
    ident = message.find("EventIdentification")
    assert (ident.get("EventActionCode"), ident.find("EventID").get("csd-code")) == ("R", "110106")
    docs = [
        o
        for o in message.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCodeRole") == "3"
    ]
    assert [d.get("ParticipantObjectID") for d in docs] == ["1.2.3.4.1", "1.2.3.4.2"]
    detail = {
        d.get("type"): base64.b64decode(d.get("value")).decode()
        for d in docs[0].findall("ParticipantObjectDetail")
    }
    assert detail["Repository Unique Id"] == "2.16.840.1.113883.2.1.3.34.9001.2"


def by_role(message: etree._Element) -> dict[str, etree._Element]:
    """The ActiveParticipants keyed by RoleIDCode (Source 110153, Destination 110152, XUA role)."""
    out: dict[str, etree._Element] = {}
    for participant in message.findall("ActiveParticipant"):
        code = participant.find("RoleIDCode").get("csd-code")
        assert code not in out, f"two participants with RoleIDCode {code}"
        out[code] = participant
    return out


@pytest.mark.parametrize("transaction", ["ITI-39", "ITI-43"])
def test_retrieve_makes_us_the_source_and_the_initiator_the_destination(
    transaction: str, atna_schema: etree.XMLSchema
) -> None:
    # ITI TF-2b 3.39.5.1.2: the Responding Gateway audits ITI-39 as a Document Repository audits
    # ITI-43 (Export): Source = the repository (us), Destination = the consumer (the initiator).
    message = build_audit_message(record(transaction), SOURCE)
    assert atna_schema.validate(message), atna_schema.error_log
    ident = message.find("EventIdentification")
    assert ident.find("EventID").get("csd-code") == "110106"
    assert ident.find("EventTypeCode").get("csd-code") == transaction
    roles = by_role(message)
    assert set(roles) == {"110153", "110152", "224608005"}
    source, dest, person = roles["110153"], roles["110152"], roles["224608005"]
    assert source.get("UserID") == "https://gw.example/xca"
    assert source.get("AlternativeUserID") == "4242"
    assert source.get("UserIsRequestor") == "false"
    assert (source.get("NetworkAccessPointID"), source.get("NetworkAccessPointTypeCode")) == (
        "gw-1.test",
        "1",
    )
    assert dest.get("UserID") == "http://www.w3.org/2005/08/addressing/anonymous"
    assert dest.get("AlternativeUserID") == "epic"
    assert dest.get("UserIsRequestor") == "true"
    assert (dest.get("NetworkAccessPointID"), dest.get("NetworkAccessPointTypeCode")) == (
        "10.1.2.3",
        "2",
    )
    assert person.get("UserID") == "user-42@partner.example"
    assert person.get("UserIsRequestor") == "true"


def test_retrieve_roles_without_xua(atna_schema: etree.XMLSchema) -> None:
    message = build_audit_message(record("ITI-39", human=None, outcome=4), SOURCE)
    assert atna_schema.validate(message), atna_schema.error_log
    roles = by_role(message)
    assert set(roles) == {"110153", "110152"}
    assert roles["110153"].get("UserID") == "https://gw.example/xca"
    assert roles["110152"].get("NetworkAccessPointID") == "10.1.2.3"


@pytest.mark.parametrize("transaction", ["ITI-38", "ITI-18", "ITI-47", "ITI-55"])
def test_queries_make_the_initiator_the_source_and_us_the_destination(
    transaction: str,
) -> None:
    roles = by_role(build_audit_message(record(transaction), SOURCE))
    source, dest = roles["110153"], roles["110152"]
    assert source.get("UserID") == "http://www.w3.org/2005/08/addressing/anonymous"
    assert source.get("NetworkAccessPointID") == "10.1.2.3"
    assert source.get("UserIsRequestor") == "true"
    assert dest.get("UserID") == "https://gw.example/xca"
    assert dest.get("AlternativeUserID") == "4242"
    assert dest.get("UserIsRequestor") == "false"
    assert roles["224608005"].get("UserIsRequestor") == "true"


def test_checker_accepts_the_message(tmp_path: Path) -> None:
    checker = shared_dir() / "conformance/validate_check.py"
    if not checker.exists():
        pytest.skip(f"checker not found at {checker}")
    for txn in ("ITI-38", "ITI-39", "ITI-47"):
        path = tmp_path / f"audit-{txn}.xml"
        path.write_bytes(
            etree.tostring(
                build_audit_message(record(txn), SOURCE), xml_declaration=True, encoding="UTF-8"
            )
        )
        result = subprocess.run(  # noqa: S603 - our own file, fixed arguments
            [sys.executable, str(checker), "--strict", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "PASS" in result.stdout


# ---- syslog -------------------------------------------------------------------------------------
def test_syslog_message_is_rfc5424_with_ihe_msgid() -> None:
    raw = render(record("ITI-47"), SOURCE)
    parsed = parse_message(raw)
    assert (parsed.facility, parsed.severity, parsed.version) == (10, 5, 1)
    assert parsed.msgid == "IHE+RFC-3881"
    assert (parsed.hostname, parsed.app_name, parsed.procid) == ("gw-1.test", "soap-edge", "4242")
    assert parsed.structured_data == "-"
    assert parsed.has_bom
    assert etree.fromstring(parsed.msg).tag == "AuditMessage"
    assert raw.startswith(b"<85>1 ")
    failure = parse_message(render(record("ITI-47", outcome=8), SOURCE))
    assert failure.severity == 3
    assert frame(b"abc") == b"3 abc"


# ---- buffer and forwarder -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def arr(pki: Pki) -> Iterator[SyslogSink]:
    sink = SyslogSink(
        cert_file=str(pki.server.cert_file),
        key_file=str(pki.server.key_file),
        client_ca_file=str(pki.ca.cert_file),
    ).start()
    yield sink
    sink.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = create_redis(redis_server.url, timeout=5.0)
    await client.flushall()
    yield client
    await client.aclose()


def endpoint(pki: Pki, port: int) -> ArrEndpoint:
    return ArrEndpoint(
        host="127.0.0.1",
        port=port,
        ca_file=str(pki.ca.cert_file),
        cert_file=str(pki.partner.cert_file),
        key_file=str(pki.partner.key_file),
        connect_timeout=2.0,
    )


def numbered(i: int) -> AuditRecord:
    return record("ITI-38", query_id=f"urn:uuid:00000000-0000-0000-0000-{i:012d}")


def query_ids(messages: list[Any]) -> list[str]:
    out = []
    for m in messages:
        root = etree.fromstring(m.msg)
        obj = root.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
        out.append(obj.get("ParticipantObjectID"))
    return out


def expected(ids: range) -> list[str]:
    return [f"urn:uuid:00000000-0000-0000-0000-{i:012d}" for i in ids]


async def _delivered(forwarder: AuditForwarder) -> None:
    """Wait until the forwarder has committed everything it sent (backlog 0)."""
    for _ in range(500):
        if await forwarder.update_backlog() == 0:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("audit backlog did not drain")


async def _start(forwarder: AuditForwarder) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(forwarder.run(stop))


async def test_forwarder_delivers_in_order_over_tls(
    pki: Pki, arr: SyslogSink, redis_client: Any
) -> None:
    queue = AuditQueue(redis_client, SOURCE)
    for i in range(5):
        await queue.enqueue(numbered(i))
    forwarder = AuditForwarder(
        redis_client, endpoint(pki, arr.port).connector(), retry_initial=0.05
    )
    stop, task = await _start(forwarder)
    try:
        messages = await asyncio.to_thread(arr.wait_for, 5)
        assert query_ids(messages) == expected(range(5))
        assert all(m.msgid == "IHE+RFC-3881" for m in messages)
        assert arr.errors() == []
        # Delivered entries leave the stream: the backlog is empty.
        await _delivered(forwarder)
        assert await redis_client.xlen(STREAM_KEY) == 0
        assert REGISTRY.get_sample_value("xcagw_audit_backlog_messages") == 0
    finally:
        stop.set()
        await task


async def test_arr_outage_during_a_burst_loses_nothing_and_keeps_order(
    pki: Pki, arr: SyslogSink, redis_client: Any
) -> None:
    queue = AuditQueue(redis_client, SOURCE)
    forwarder = AuditForwarder(
        redis_client, endpoint(pki, arr.port).connector(), retry_initial=0.05, retry_max=0.2
    )
    stop, task = await _start(forwarder)
    try:
        for i in range(3):
            await queue.enqueue(numbered(i))
        await asyncio.to_thread(arr.wait_for, 3)
        await _delivered(forwarder)
        arr.stop()  # the ARR goes away, with its connections
        failures_before = (
            REGISTRY.get_sample_value("xcagw_audit_delivery_failures_total", {"kind": "connect"})
            or 0.0
        )
        for i in range(3, 40):
            await queue.enqueue(numbered(i))
        # The forwarder keeps failing to connect; everything waits in Redis.
        for _ in range(500):
            failures = (
                REGISTRY.get_sample_value(
                    "xcagw_audit_delivery_failures_total", {"kind": "connect"}
                )
                or 0.0
            )
            if failures >= failures_before + 2:
                break
            await asyncio.sleep(0.02)
        assert await forwarder.update_backlog() == 37
        assert REGISTRY.get_sample_value("xcagw_audit_backlog_messages") == 37
        arr.start()  # back on the same port
        messages = await asyncio.to_thread(arr.wait_for, 40, 20.0)
        assert query_ids(messages) == expected(range(40))  # each once, in order
        await asyncio.sleep(0.2)
        assert len(arr.messages()) == 40
        assert arr.errors() == []
    finally:
        stop.set()
        await task


async def test_only_one_replica_forwards_and_a_survivor_takes_over(
    pki: Pki, arr: SyslogSink, redis_client: Any
) -> None:
    queue = AuditQueue(redis_client, SOURCE)
    connector = endpoint(pki, arr.port).connector()
    first = AuditForwarder(
        redis_client, connector, replica_id="a", lease_seconds=0.6, retry_initial=0.05
    )
    second = AuditForwarder(
        redis_client, connector, replica_id="b", lease_seconds=0.6, retry_initial=0.05
    )
    stop_a, task_a = await _start(first)
    stop_b, task_b = await _start(second)
    try:
        for i in range(10):
            await queue.enqueue(numbered(i))
        await asyncio.to_thread(arr.wait_for, 10)
        leader = (await redis_client.get("xcagw:soap-edge:{audit}:lease")).decode()
        # Stop the leader; the other replica takes over when its lease expires.
        (stop_a if leader == "a" else stop_b).set()
        await (task_a if leader == "a" else task_b)
        for i in range(10, 20):
            await queue.enqueue(numbered(i))
        messages = await asyncio.to_thread(arr.wait_for, 20, 20.0)
        assert query_ids(messages) == expected(range(20))
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(task_a, task_b)


async def test_enqueue_fails_loudly_when_redis_is_down() -> None:
    server = RedisServer().start()
    client = create_redis(server.url, timeout=0.5)
    try:
        server.kill()
        with pytest.raises(AuditUnavailable):
            await AuditQueue(client, SOURCE).enqueue(record("ITI-38"))
    finally:
        await client.aclose()
        server.stop()


def test_event_time_is_utc_with_milliseconds() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    message = build_audit_message(record("ITI-47", event_time=at), SOURCE)
    assert message.find("EventIdentification").get("EventDateTime") == "2026-01-02T02:04:05.678Z"
