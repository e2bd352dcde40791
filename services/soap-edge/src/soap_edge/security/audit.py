"""ATNA audit (IHE ITI-20 Record Audit Event): one DICOM audit message per transaction.

Three parts:

1. **The message** (`build_audit_message`): DICOM PS3.15 A.5 XML as in the ATNA schema
   (`dicom2017c.xsd`, which requires `ActiveParticipant@UserIsRequestor`), with the participants
   and objects of ihe-xca-rules §10.2: the initiating gateway (ReplyTo and IP), the Human
   Requestor (from the verified XUA assertion), our endpoint, Patient(s), the Query object
   (ITI-38/18/47/55, the query itself base64 encoded) and one Document object per retrieved
   document (ITI-39/43). Which side is Source and which Destination follows the data: the
   initiating gateway is the Source of a query (we are its Destination), we are the Source of a
   retrieve (Export; the initiating gateway is its Destination). NHS numbers appear here and
   nowhere else (not in logs, spans or metric labels); the audit record is where they belong.
2. **The durable buffer** (`AuditQueue`): each message, already framed as an RFC 5424 syslog
   message, is appended to a Redis stream *before* the SOAP response is released (XADD; a
   failure there fails the request rather than disclosing data without an audit trail).
3. **The forwarder** (`AuditForwarder`): one background task per replica, of which exactly one
   (holder of a lease key) delivers the stream in order to the Audit Record Repository over
   syslog TLS (RFC 5425: TLS 1.2+, octet-counting framing `MSG-LEN SP SYSLOG-MSG`). Its position
   is a cursor key, moved (with a lease check, so a replica that lost the lease cannot move it)
   only after a message was written, flushed and the connection was still open a moment later;
   delivered entries are trimmed. While the ARR is down it retries with capped exponential
   backoff and nothing is lost; `xcagw_audit_backlog_messages` shows the queue.

RFC 5425 has no application-level acknowledgement: delivery is at-least-once from the cursor
(a connection that breaks mid-batch resends the unconfirmed messages). A message the ARR's kernel
accepted but the ARR process never read (it crashed) cannot be detected by any syslog sender.

Redis keys (one hash tag, so the lease-checked Lua commit is Redis Cluster safe):
  `xcagw:soap-edge:{audit}:stream`  the undelivered syslog messages (stream, field `m`)
  `xcagw:soap-edge:{audit}:cursor`  id of the last delivered entry (string)
  `xcagw:soap-edge:{audit}:lease`   id of the replica that forwards (string, PX lease)
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lxml import etree
from prometheus_client import Counter, Gauge

from soap_edge.redisbatch import AutoPipeline
from soap_edge.security.xua import Coded, XuaIdentity

log = logging.getLogger(__name__)

STREAM_KEY = "xcagw:soap-edge:{audit}:stream"
CURSOR_KEY = "xcagw:soap-edge:{audit}:cursor"
LEASE_KEY = "xcagw:soap-edge:{audit}:lease"

AUDIT_MESSAGES = Counter(
    "xcagw_audit_messages_total",
    "ATNA audit messages: queued (XADD done), delivered (written to the ARR), or lost (Redis "
    "could not take them; only for exchanges that disclosed nothing).",
    ["result"],
)
AUDIT_DELIVERY_FAILURES = Counter(
    "xcagw_audit_delivery_failures_total",
    "Failed attempts to deliver audit messages to the ARR, by kind (connect, write).",
    ["kind"],
)
AUDIT_BACKLOG = Gauge(
    "xcagw_audit_backlog_messages", "Audit messages buffered in Redis, not yet delivered."
)
AUDIT_OLDEST_AGE = Gauge(
    "xcagw_audit_oldest_undelivered_seconds",
    "Age of the oldest undelivered audit message (0 when none).",
)

# RFC 5424 §6.2.1: PRI = facility * 8 + severity. IHE ATNA and dcm4che use facility 10
# (security/authorization); severity follows the outcome (dcm4che's mapping).
SYSLOG_FACILITY = 10
_SEVERITY_BY_OUTCOME = {0: 5, 4: 4, 8: 3, 12: 2}  # notice, warning, error, critical
# IHE ITI TF-2 3.20.6.1 (and dcm4che#82): the MSGID of an audit message.
MSGID = "IHE+RFC-3881"
# RFC 5424 §6.4: a UTF-8 MSG starts with the byte order mark.
BOM = b"\xef\xbb\xbf"

NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"


# ---- The DICOM audit message -------------------------------------------------------------------
@dataclass(frozen=True)
class Code:
    """A DICOM coded value (CodedValueType: csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    text: str


@dataclass(frozen=True)
class EventType:
    event_id: Code
    action: str
    type_code: Code


DCM = "DCM"
IHE_TXN = "IHE Transactions"
_QUERY = Code("110112", DCM, "Query")
_EXPORT = Code("110106", DCM, "Export")
EVENTS: dict[str, EventType] = {
    "ITI-38": EventType(_QUERY, "E", Code("ITI-38", IHE_TXN, "Cross Gateway Query")),
    "ITI-18": EventType(_QUERY, "E", Code("ITI-18", IHE_TXN, "Registry Stored Query")),
    "ITI-39": EventType(_EXPORT, "R", Code("ITI-39", IHE_TXN, "Cross Gateway Retrieve")),
    "ITI-43": EventType(_EXPORT, "R", Code("ITI-43", IHE_TXN, "Retrieve Document Set")),
    "ITI-47": EventType(_QUERY, "E", Code("ITI-47", IHE_TXN, "Patient Demographics Query")),
    "ITI-55": EventType(_QUERY, "E", Code("ITI-55", IHE_TXN, "Cross Gateway Patient Discovery")),
}
SOURCE_ROLE = Code("110153", DCM, "Source Role ID")
DESTINATION_ROLE = Code("110152", DCM, "Destination Role ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
REPORT_NUMBER = Code("9", "RFC-3881", "Report Number")

OUTCOME_SUCCESS = 0
OUTCOME_MINOR_FAILURE = 4
OUTCOME_SERIOUS_FAILURE = 8
OUTCOME_MAJOR_FAILURE = 12


@dataclass(frozen=True)
class DocumentRef:
    unique_id: str
    repository_unique_id: str
    home_community_id: str


@dataclass
class AuditRecord:
    """What happened in one transaction; `build_audit_message` turns it into DICOM XML."""

    transaction: str
    event_time: datetime
    outcome: int = OUTCOME_SUCCESS
    outcome_description: str = ""
    # The initiating gateway (the request's sender: Source of a query, Destination of a retrieve).
    source_reply_to: str = ""
    source_ip: str = ""
    partner_id: str = ""
    # Our endpoint that received the request (Destination of a query, Source of a retrieve).
    destination_url: str = ""
    human: XuaIdentity | None = None
    # HL7 CX (`id^^^&root&ISO`) of every patient the transaction was about or returned.
    patients: list[str] = field(default_factory=list)
    query_id: str = ""
    query: bytes | None = None
    home_community_id: str = ""
    documents: list[DocumentRef] = field(default_factory=list)


@dataclass(frozen=True)
class AuditSource:
    """This gateway as the audit source (AuditSourceIdentification and our ActiveParticipant)."""

    source_id: str
    enterprise_site_id: str = ""
    hostname: str = field(default_factory=socket.gethostname)
    app_name: str = "soap-edge"
    process_id: str = field(default_factory=lambda: str(os.getpid()))


def patient_cx(value: str, root: str = NHS_NUMBER_OID) -> str:
    """HL7 v2 CX of a patient id in an ISO assigning authority (IHE ITI TF-3 4.2.3.1.7)."""
    return f"{value}^^^&{root}&ISO"


def _coded(parent: etree._Element, tag: str, code: Code) -> etree._Element:
    el = etree.SubElement(parent, tag)
    el.set("csd-code", code.code)
    el.set("codeSystemName", code.system)
    el.set("originalText", code.text)
    return el


def _asserted_code(coded: Coded) -> Code:
    """An XUA-asserted code (role, purpose of use) as an audit code; the system falls back to
    its name, the text to the code (DICOM PS3.15 A.5: csd-code, codeSystemName, originalText)."""
    return Code(
        _token(coded.code),
        _token(coded.code_system or coded.code_system_name or "unknown"),
        _token(coded.display_name or coded.code),
    )


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _token(value: str) -> str:
    """xs:token: no leading/trailing/double spaces, no line breaks."""
    return " ".join(value.split())


def _detail(parent: etree._Element, kind: str, value: str) -> None:
    # DICOM PS3.15 A.5.3: ParticipantObjectDetail values are base64 (as in epr-iti-43-log.xml).
    el = etree.SubElement(parent, "ParticipantObjectDetail")
    el.set("type", kind)
    el.set("value", _b64(value))


def build_audit_message(record: AuditRecord, source: AuditSource) -> etree._Element:
    """The DICOM `AuditMessage` for one transaction (ihe-xca-rules §10.2)."""
    event = EVENTS[record.transaction]
    root = etree.Element("AuditMessage")
    ident = etree.SubElement(root, "EventIdentification")
    ident.set("EventActionCode", event.action)
    ident.set("EventDateTime", _xs_datetime(record.event_time))
    ident.set("EventOutcomeIndicator", str(record.outcome))
    _coded(ident, "EventID", event.event_id)
    _coded(ident, "EventTypeCode", event.type_code)
    if record.outcome_description:
        etree.SubElement(ident, "EventOutcomeDescription").text = record.outcome_description
    human = record.human
    if human is not None:
        for purpose in human.purposes_of_use:
            # ITI TF-2 3.20.7.8 (XUA++): the asserted purpose of use.
            _coded(ident, "PurposeOfUse", _asserted_code(purpose))

    # Who is Source and who Destination follows the data, not the request.
    if event.event_id == _EXPORT:
        # ITI-39/ITI-43 (Export): we send the documents, so we are the Source and the initiating
        # gateway is the Destination. ITI TF-2b 3.39.5.1.2: the Responding Gateway audits as if it
        # were a Document Repository (ITI TF-2b 3.43.5.1, Export 110106), whose table makes the
        # Source the repository (endpoint URI, process id, UserIsRequestor "false") and the
        # Destination the Document Consumer (its ReplyTo, its address). As in
        # XCARespondingGatewayAuditor.auditCrossGatewayRetrieveEvent (OHT, used by IPF).
        requester_role, responder_role = DESTINATION_ROLE, SOURCE_ROLE
    else:
        # Queries (ITI-38 and ITI-18 as a Document Registry, ITI TF-2a 3.18.5.1; ITI-47 as a
        # Patient Demographics Supplier, ITI TF-2b 3.47.5.1; ITI-55 as a Responding Gateway,
        # ITI TF-2b 3.55.5.1): the requester is the Source, we are the Destination.
        requester_role, responder_role = SOURCE_ROLE, DESTINATION_ROLE
    # The schema and DICOM PS3.15 A.5 give ActiveParticipant no order (readers select by
    # RoleIDCode); one order for every transaction keeps the messages easy to compare.
    _requester(root, record, requester_role)
    _human_requestor(root, human)
    _responder(root, record, source, responder_role)

    audit_source = etree.SubElement(root, "AuditSourceIdentification")
    if source.enterprise_site_id:
        audit_source.set("AuditEnterpriseSiteID", _token(source.enterprise_site_id))
    audit_source.set("AuditSourceID", _token(source.source_id))
    # DICOM PS3.15 A.5.1 AuditSourceTypeCode 4: application server process.
    ast = etree.SubElement(audit_source, "AuditSourceTypeCode")
    ast.set("csd-code", "4")
    ast.set("codeSystemName", DCM)
    ast.set("originalText", "Application Server process or thread")

    for cx in dict.fromkeys(record.patients):
        patient = etree.SubElement(root, "ParticipantObjectIdentification")
        patient.set("ParticipantObjectID", _token(cx))
        patient.set("ParticipantObjectTypeCode", "1")
        patient.set("ParticipantObjectTypeCodeRole", "1")
        _coded(patient, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)

    if event.event_id == _QUERY:
        query = etree.SubElement(root, "ParticipantObjectIdentification")
        if record.query_id:
            query.set("ParticipantObjectID", _token(record.query_id))
        query.set("ParticipantObjectTypeCode", "2")
        query.set("ParticipantObjectTypeCodeRole", "24")
        _coded(query, "ParticipantObjectIDTypeCode", event.type_code)
        etree.SubElement(query, "ParticipantObjectQuery").text = base64.b64encode(
            record.query or b""
        ).decode("ascii")
        _detail(query, "QueryEncoding", "UTF-8")
        if record.home_community_id and record.transaction in ("ITI-38", "ITI-18"):
            _detail(query, "ihe:homeCommunityID", record.home_community_id)

    for doc in record.documents:
        obj = etree.SubElement(root, "ParticipantObjectIdentification")
        obj.set("ParticipantObjectID", _token(doc.unique_id))
        obj.set("ParticipantObjectTypeCode", "2")
        obj.set("ParticipantObjectTypeCodeRole", "3")
        _coded(obj, "ParticipantObjectIDTypeCode", REPORT_NUMBER)
        _detail(obj, "Repository Unique Id", doc.repository_unique_id)
        if doc.home_community_id:
            _detail(obj, "ihe:homeCommunityID", doc.home_community_id)
    return root


def _requester(parent: etree._Element, record: AuditRecord, role: Code) -> None:
    """The initiating gateway: its WS-Addressing ReplyTo and the address it connected from.

    Its UserIsRequestor is "not specialized" in every TF table (Source of a query, Destination of
    a retrieve); DICOM PS3.15 A.5 defines it as "is the requestor, or initiator, for the event",
    which the gateway that sent the request is, so it is "true" in both.
    """
    el = etree.SubElement(parent, "ActiveParticipant")
    el.set("UserID", record.source_reply_to or "unknown")
    if record.partner_id:
        el.set("AlternativeUserID", record.partner_id)
    el.set("UserIsRequestor", "true")
    if record.source_ip:
        el.set("NetworkAccessPointID", record.source_ip)
        el.set("NetworkAccessPointTypeCode", "2")
    _coded(el, "RoleIDCode", role)


def _responder(
    parent: etree._Element, record: AuditRecord, source: AuditSource, role: Code
) -> None:
    """This gateway: the endpoint URI that answered, our process id, never the requestor (the
    TF tables fix UserIsRequestor "false" for the responding actor, as Source or Destination)."""
    el = etree.SubElement(parent, "ActiveParticipant")
    el.set("UserID", record.destination_url or "unknown")
    el.set("AlternativeUserID", source.process_id)
    el.set("UserIsRequestor", "false")
    el.set("NetworkAccessPointID", _token(source.hostname) or "localhost")
    el.set("NetworkAccessPointTypeCode", "1")
    _coded(el, "RoleIDCode", role)


def _human_requestor(parent: etree._Element, human: XuaIdentity | None) -> None:
    """The person named by the verified XUA assertion, if any."""
    if human is None:
        return
    # ITI TF-2 3.40.4.2 (XUA): UserName is alias<user@issuer>.
    person = etree.SubElement(parent, "ActiveParticipant")
    person.set("UserID", human.name_id or human.subject_id)
    person.set("UserName", f"{human.subject_id}<{human.name_id}@{human.issuer}>")
    person.set("UserIsRequestor", "true")
    if human.role is not None:
        _coded(person, "RoleIDCode", _asserted_code(human.role))


def _xs_datetime(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- Syslog (RFC 5424) and TLS framing (RFC 5425) ----------------------------------------------
def _printusascii(value: str, limit: int) -> str:
    cleaned = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def syslog_message(
    xml: bytes,
    *,
    event_time: datetime,
    source: AuditSource,
    outcome: int = OUTCOME_SUCCESS,
    bom: bool = True,
) -> bytes:
    """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (RFC 5424 §6)."""
    pri = SYSLOG_FACILITY * 8 + _SEVERITY_BY_OUTCOME.get(outcome, 5)
    header = " ".join(
        (
            f"<{pri}>1",
            _xs_datetime(event_time),
            _printusascii(source.hostname, 255),
            _printusascii(source.app_name, 48),
            _printusascii(source.process_id, 128),
            MSGID,
            "-",
        )
    )
    return header.encode("ascii") + b" " + (BOM if bom else b"") + xml


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3: octet-counting framing, `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode("ascii") + b" " + message


def render(record: AuditRecord, source: AuditSource, *, bom: bool = True) -> bytes:
    """The complete syslog message for one audit record."""
    xml = etree.tostring(build_audit_message(record, source), encoding="UTF-8")
    return syslog_message(
        xml, event_time=record.event_time, source=source, outcome=record.outcome, bom=bom
    )


# ---- Durable buffer -----------------------------------------------------------------------------
class AuditUnavailable(Exception):
    """The audit message could not be buffered; the transaction must not be answered."""


class AuditQueue:
    """Appends rendered audit messages to the Redis stream (before the response is sent)."""

    def __init__(self, redis: Any, source: AuditSource, *, bom: bool = True) -> None:
        self._redis = redis
        # Concurrent exchanges share XADD round trips; each still waits for its own entry id,
        # so no response leaves before its audit message is in Redis (issue #11).
        self._batch = AutoPipeline(redis)
        self.source = source
        self.bom = bom

    async def enqueue(self, record: AuditRecord) -> str:
        """XADD the message; returns the stream id. Raises AuditUnavailable."""
        message = render(record, self.source, bom=self.bom)
        try:
            entry_id = await self._batch.execute("XADD", STREAM_KEY, "*", "m", message)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means "not buffered"
            raise AuditUnavailable(type(exc).__name__) from None
        AUDIT_MESSAGES.labels("queued").inc()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


# ---- Forwarder ----------------------------------------------------------------------------------
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Connection]]


@dataclass(frozen=True)
class ArrEndpoint:
    """Where the Audit Record Repository listens (syslog over TLS, or plain TCP in dev)."""

    host: str
    port: int
    tls: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    connect_timeout: float = 5.0

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            # ATNA Secure Node: the ARR authenticates us with our node certificate too.
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def connector(self) -> Connector:
        ctx = self.ssl_context()

        async def connect() -> Connection:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=ctx,
                    server_hostname=(self.server_name or self.host) if ctx else None,
                ),
                self.connect_timeout,
            )

        return connect


# Move the cursor only while holding the lease (fencing), and trim what was delivered.
_COMMIT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
return 1
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class AuditForwarder:
    """Delivers the stream to the ARR in order; run one per replica (one of them leads).

    Give it its own Redis client whose socket timeout exceeds `poll_seconds` (it blocks in
    XREAD for that long).
    """

    def __init__(
        self,
        redis: Any,
        connect: Connector,
        *,
        replica_id: str | None = None,
        lease_seconds: float = 10.0,
        batch_size: int = 100,
        poll_seconds: float = 0.5,
        retry_initial: float = 0.2,
        retry_max: float = 30.0,
        confirm_delay: float = 0.05,
        write_timeout: float = 10.0,
    ) -> None:
        self._redis = redis
        self._connect = connect
        self.replica_id = replica_id or uuid.uuid4().hex
        self._lease_ms = int(lease_seconds * 1000)
        self._batch = batch_size
        self._poll_ms = max(1, int(poll_seconds * 1000))
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._confirm_delay = confirm_delay
        self._write_timeout = write_timeout
        self._commit = redis.register_script(_COMMIT_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self._conn: Connection | None = None
        self._backoff = retry_initial

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until `stop` is set; never raises (Redis and ARR failures are retried)."""
        while not stop.is_set():
            try:
                delivered = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep forwarding after any failure
                log.warning("audit forwarder: %s, retrying", type(exc).__name__)
                await self._close()
                delivered = False
                await self._wait(stop, self._next_backoff())
                continue
            if not delivered:
                continue
            self._backoff = self._retry_initial
        await self._close()

    async def _step(self) -> bool:
        """One round: lead, read a batch after the cursor, deliver it. True if delivered."""
        if not int(await self._renew(keys=[LEASE_KEY], args=[self.replica_id, self._lease_ms])):
            await self.update_backlog()
            await asyncio.sleep(self._lease_ms / 3000)
            return False
        cursor = await self._redis.get(CURSOR_KEY)
        cursor_id = (cursor.decode() if isinstance(cursor, bytes) else cursor) or "0-0"
        block = min(self._poll_ms, self._lease_ms // 3)
        found = await self._redis.xread({STREAM_KEY: cursor_id}, count=self._batch, block=block)
        await self.update_backlog()
        if not found:
            return False
        entries: Sequence[tuple[Any, dict[Any, Any]]] = found[0][1]
        await self._deliver(entries)
        return True

    async def _deliver(self, entries: Sequence[tuple[Any, dict[Any, Any]]]) -> None:
        """Write a batch, flush, confirm the connection survived, then move the cursor."""
        reader, writer = await self._connection()
        last_id = ""
        for raw_id, fields in entries:
            last_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            message = fields.get(b"m", fields.get("m"))
            if isinstance(message, str):
                message = message.encode("utf-8")
            if reader.at_eof() or writer.is_closing():
                # The ARR closed the connection: a write now would be dropped silently.
                AUDIT_DELIVERY_FAILURES.labels("write").inc()
                raise ConnectionResetError("ARR closed the connection")
            writer.write(frame(message or b""))
        try:
            await asyncio.wait_for(writer.drain(), self._write_timeout)
        except (OSError, TimeoutError):
            AUDIT_DELIVERY_FAILURES.labels("write").inc()
            raise
        # Give a closing peer a moment to show its EOF before the batch counts as delivered.
        await asyncio.sleep(self._confirm_delay)
        if reader.at_eof() or writer.is_closing():
            AUDIT_DELIVERY_FAILURES.labels("write").inc()
            raise ConnectionResetError("ARR closed the connection")
        committed = await self._commit(
            keys=[LEASE_KEY, CURSOR_KEY, STREAM_KEY],
            args=[self.replica_id, last_id, _next_id(last_id)],
        )
        if not int(committed):
            raise RuntimeError("audit forwarder lost its lease")
        AUDIT_MESSAGES.labels("delivered").inc(len(entries))

    async def _connection(self) -> Connection:
        if self._conn is not None:
            reader, writer = self._conn
            if not reader.at_eof() and not writer.is_closing():
                return self._conn
            await self._close()
        try:
            self._conn = await self._connect()
        except (OSError, TimeoutError, ssl.SSLError):
            AUDIT_DELIVERY_FAILURES.labels("connect").inc()
            raise
        log.info("audit forwarder connected to the ARR")
        return self._conn

    async def _close(self) -> None:
        if self._conn is None:
            return
        _, writer = self._conn
        self._conn = None
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (OSError, TimeoutError, ssl.SSLError):
            return

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._retry_max, self._backoff * 2)
        return delay

    @staticmethod
    async def _wait(stop: asyncio.Event, delay: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return

    async def update_backlog(self) -> int:
        """Refresh the backlog gauges from Redis; returns the backlog length."""
        length = int(await self._redis.xlen(STREAM_KEY))
        AUDIT_BACKLOG.set(length)
        if length:
            first = await self._redis.xrange(STREAM_KEY, count=1)
            if first:
                raw = first[0][0]
                ms = int((raw.decode() if isinstance(raw, bytes) else raw).split("-")[0])
                AUDIT_OLDEST_AGE.set(max(0.0, time.time() - ms / 1000))
        else:
            AUDIT_OLDEST_AGE.set(0)
        return length
