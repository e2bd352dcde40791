"""Fuzzing kit for soap-edge: fake backends, an in-process harness, seeds, mutators, invariants.

Shared by tests-fuzz (CI-sized hypothesis runs) and scripts/fuzz_long.py (`make fuzz`, atheris or
a large hypothesis budget). It does not import soap-edge's test modules: the minimal fake backend
set-up is repeated here on purpose (pytest's --import-mode=importlib keeps test folders apart).

The app runs in-process behind httpx.ASGITransport on a private event loop owned by the harness,
against a real redis-server (xcagw_common.testing.RedisServer) and four grpc.aio fake backends on
real sockets served from their own thread.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lxml import etree

from soap_edge.app import create_app
from soap_edge.config import Settings
from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw.pds.v1 import pds_adapter_pb2, pds_adapter_pb2_grpc
from xcagw_common.errors import abort
from xcagw_devstack import partner

HCID_OID = "2.16.840.1.113883.2.1.3.34.9001"
HCID = f"urn:oid:{HCID_OID}"
REPO = "2.16.840.1.113883.2.1.3.34.9001.2"
NHS_OID = partner.NHS_NUMBER_OID
CEID_OID = "1.2.840.114350.1.13.525.3.7.3.688884.100"

JANE = "9000000009"
JAYNE = "9000000017"
RESTRICTED = "9000000025"
UNKNOWN = "9999999999"  # passes Modulus 11, not known to the fake PDS
INVALID = "9000000001"  # fails Modulus 11

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = partner.NS["wsa"]
XOP = partner.NS["xop"]
HL7 = partner.NS["hl7"]
RIM = partner.NS["rim"]
QUERY = partner.NS["query"]
XDSB = partner.NS["xdsb"]
NAMESPACES = (SOAP12, SOAP11, WSA, XOP, HL7, RIM, QUERY, XDSB, partner.NS["rs"], partner.NS["wsse"])

SOAP_CT = "application/soap+xml; charset=UTF-8"
ENDPOINTS = ("/iti47", "/iti55", "/iti38", "/iti39", "/xca")
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"

# The partner client sends an unsigned XUA assertion and no client certificate: the development
# partner set-up of soap_edge.security (an anonymous partner whose SAML is read, not verified).
DEV_SECURITY: dict[str, Any] = {
    "allow_insecure_dev_partners": True,
    "partner_registry": {
        "anonymous_partner": "dev",
        "partners": [{"id": "dev", "saml": {"required": False, "verify": False}}],
    },
}

# Fault codes SOAP 1.2 Part 2 §7.5.2.2 (Table 20) answers with HTTP 500. Sender faults are 4xx.
FAULTS_WITH_500 = frozenset({"env:Receiver", "env:MustUnderstand", "env:VersionMismatch"})
_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


# ---- Fake backends (grpc.aio on real sockets, their own loop and thread) ----
def _patient(nhs: str, family: str, given: str, **extra: Any) -> pds_adapter_pb2.Patient:
    return pds_adapter_pb2.Patient(
        nhs_number=nhs,
        names=[pds_adapter_pb2.HumanName(use="usual", family=family, given=[given])],
        gender="female",
        birth_date="2010-10-22",
        gp_ods_code="Y12345",
        **{"security_label": "U", **extra},
    )


PATIENTS = {JANE: _patient(JANE, "Smith", "Jane"), JAYNE: _patient(JAYNE, "Smyth", "Jayne")}


@dataclass
class FakeCalls:
    """How often each fake was called (single-flight and "no backend call" checks)."""

    calls: Counter[str] = field(default_factory=Counter)


class _Pds(pds_adapter_pb2_grpc.PdsAdapterServiceServicer):
    def __init__(self, state: FakeCalls) -> None:
        self.state = state

    async def GetPatient(self, request: Any, context: Any) -> Any:
        self.state.calls["GetPatient"] += 1
        if request.nhs_number == RESTRICTED:
            await abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "restricted", "RESTRICTED_PATIENT"
            )
        patient = PATIENTS.get(request.nhs_number)
        if patient is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, "not found", "PATIENT_NOT_FOUND")
        return pds_adapter_pb2.GetPatientResponse(patient=patient)

    async def SearchPatients(self, request: Any, context: Any) -> Any:
        self.state.calls["SearchPatients"] += 1
        family = request.family.lower()
        if family == "jones":
            await abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "too many", "TOO_MANY_MATCHES"
            )
        found = [p for p in PATIENTS.values() if p.names[0].family.lower() == family]
        return pds_adapter_pb2.SearchPatientsResponse(patients=found, scores=[0.9] * len(found))


class _GpConnect(gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceServicer):
    def __init__(self, state: FakeCalls) -> None:
        self.state = state

    async def LookupEndpoint(self, request: Any, context: Any) -> Any:
        return gpconnect_adapter_pb2.LookupEndpointResponse(ods_code=request.ods_code)

    async def GetStructuredRecord(self, request: Any, context: Any) -> Any:
        self.state.calls["GetStructuredRecord"] += 1
        bundle = b'{"resourceType":"Bundle","type":"collection"}'
        return gpconnect_adapter_pb2.GetStructuredRecordResponse(
            bundle_json=bundle, ods_code="Y12345", nhs_number=request.nhs_number
        )


def fake_ccd(ext: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><realmCode code="GB"/>'
        f'<id root="2.16.840.1.113883.2.1.3.34.9001.1" extension="{ext}"/>'
        "<title>Summary of GP record</title>"
        '<documentationOf><serviceEvent classCode="PCPR"><effectiveTime>'
        '<low value="20100101"/><high value="20250101120000+0100"/>'
        "</effectiveTime></serviceEvent></documentationOf>"
        "<component><structuredBody/></component></ClinicalDocument>\n"
    ).encode()


class _Ccda(ccda_converter_pb2_grpc.CcdaConverterServiceServicer):
    def __init__(self, state: FakeCalls) -> None:
        self.state = state

    async def ConvertBundle(self, request: Any, context: Any) -> Any:
        self.state.calls["ConvertBundle"] += 1
        ext = str(uuid.uuid4())
        return ccda_converter_pb2.ConvertBundleResponse(
            ccd_xml=fake_ccd(ext), document_id=f"2.16.840.1.113883.2.1.3.34.9001.1^{ext}"
        )

    async def RenderHtml(self, request: Any, context: Any) -> Any:
        return ccda_converter_pb2.RenderHtmlResponse(html="<html/>")


class FakeBackends:
    """pds-adapter, gpconnect-adapter, ccda-converter and token-service (health only)."""

    NAMES = ("pds-adapter", "gpconnect-adapter", "ccda-converter", "token-service")

    def __init__(self) -> None:
        self.state = FakeCalls()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.addrs: dict[str, str] = {}
        self._servers: list[grpc.aio.Server] = []

    def start(self) -> FakeBackends:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)
        return self

    async def _start(self) -> None:
        for name in self.NAMES:
            server = grpc.aio.server()  # type: ignore[attr-defined]
            hs = health.aio.HealthServicer()  # type: ignore[attr-defined]
            health_pb2_grpc.add_HealthServicer_to_server(hs, server)
            if name == "pds-adapter":
                pds_adapter_pb2_grpc.add_PdsAdapterServiceServicer_to_server(
                    _Pds(self.state), server
                )
            elif name == "gpconnect-adapter":
                gpconnect_adapter_pb2_grpc.add_GpConnectAdapterServiceServicer_to_server(
                    _GpConnect(self.state), server
                )
            elif name == "ccda-converter":
                ccda_converter_pb2_grpc.add_CcdaConverterServiceServicer_to_server(
                    _Ccda(self.state), server
                )
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            await hs.set("", health_pb2.HealthCheckResponse.SERVING)
            self.addrs[name] = f"127.0.0.1:{port}"
            self._servers.append(server)

    def stop(self) -> None:
        async def _stop() -> None:
            for server in self._servers:
                await server.stop(0)

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# ---- The in-process app ----
class _ExceptionLog(logging.Handler):
    """Collects log records that carry an exception: each is a crash the service papered over."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


class SoapEdgeHarness:
    """soap-edge's ASGI app with its lifespan entered, driven synchronously on a private loop."""

    def __init__(self, redis_url: str, fakes: FakeBackends, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "pds_adapter_addr": fakes.addrs["pds-adapter"],
            "gpconnect_adapter_addr": fakes.addrs["gpconnect-adapter"],
            "ccda_converter_addr": fakes.addrs["ccda-converter"],
            "token_service_addr": fakes.addrs["token-service"],
            "home_community_id": HCID_OID,
            "repository_unique_id": REPO,
            "readiness_timeout_seconds": 0.5,
            **{k: v for k, v in DEV_SECURITY.items() if k in Settings.model_fields},
            **overrides,
        }
        self.settings = Settings(**values)
        self.fakes = fakes
        self.loop = asyncio.new_event_loop()
        self.app = create_app(self.settings)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        # raise_app_exceptions: an exception escaping the app is a crash the harness must see.
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=True)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://soap-edge.test")
        self.exceptions = _ExceptionLog()
        logging.getLogger("soap_edge").addHandler(self.exceptions)
        self.seeds = Seeds.build(self)
        # Computed once: strategies drawn from it must see the same lists for every example.
        self.vocab = vocabulary(self.seeds)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def post(self, path: str, body: bytes, content_type: str | None = SOAP_CT) -> httpx.Response:
        headers = {"content-type": content_type} if content_type is not None else {}
        response: httpx.Response = self.run(self.client.post(path, content=body, headers=headers))
        return response

    def close(self) -> None:
        logging.getLogger("soap_edge").removeHandler(self.exceptions)
        self.run(self.client.aclose())
        self.run(self._lifespan.__aexit__(None, None, None))
        self.loop.close()


# ---- Invariants ----
@dataclass
class Verdict:
    """What one response was: a SOAP reply (with its root) or a fault (with its code)."""

    status: int
    fault_code: str | None
    root: etree._Element
    mtom: bool


class InvariantError(AssertionError):
    """A response broke the contract: non-SOAP, a 5xx that is not a SOAP fault, wrong mapping."""


def _multipart_root(content_type: str, raw: bytes) -> bytes:
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw, policy=email.policy.HTTP
    )
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    if not parts:
        raise InvariantError("multipart response without parts")
    return bytes(parts[0].get_payload(decode=True))


def check_response(resp: httpx.Response) -> Verdict:
    """Every answer is a SOAP 1.2 envelope; faults carry the HTTP status SOAP 1.2 prescribes."""
    status = resp.status_code
    ctype = resp.headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main == "multipart/related":
        root_xml = _multipart_root(ctype, resp.content)
        mtom = True
    elif main == "application/soap+xml":
        root_xml = resp.content
        mtom = False
    else:
        raise InvariantError(f"HTTP {status} with non-SOAP content type {ctype!r}")
    try:
        root = etree.fromstring(root_xml, _SAFE)
    except etree.XMLSyntaxError as exc:
        raise InvariantError(f"HTTP {status}: body is not XML ({exc})") from exc
    if root.tag != f"{{{SOAP12}}}Envelope":
        raise InvariantError(f"HTTP {status}: root is {root.tag}, not a SOAP 1.2 Envelope")
    body = root.find(f"{{{SOAP12}}}Body")
    if body is None or len(body) != 1:
        raise InvariantError(f"HTTP {status}: Body must hold exactly one element")
    payload = body[0]
    has_action = root.find(f"{{{SOAP12}}}Header/{{{WSA}}}Action") is not None
    if payload.tag == f"{{{SOAP12}}}Fault":
        code = (payload.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value") or "").strip()
        if status >= 500 and code not in FAULTS_WITH_500:
            raise InvariantError(f"HTTP {status} with fault code {code}")
        if 400 <= status < 500 and code != "env:Sender":
            raise InvariantError(f"HTTP {status} with fault code {code} (expected env:Sender)")
        if status < 400:
            raise InvariantError(f"HTTP {status} carrying a fault")
        reason = payload.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or ""
        if "Traceback" in reason or 'File "' in reason:
            raise InvariantError("fault reason carries a stack trace")
        return Verdict(status, code, root, mtom)
    if status != 200:
        raise InvariantError(f"HTTP {status} without a fault")
    if not has_action:
        # Transport-level refusals (size, headers) may fault before WS-A is read; replies may not.
        raise InvariantError("reply without wsa:Action")
    return Verdict(status, None, root, mtom)


# ---- Seeds: valid requests built by the partner client ----
@dataclass
class Seed:
    """One valid request: where it goes and its envelope tree (copy before mutating)."""

    name: str
    path: str
    action: str
    body: etree._Element
    with_xua: bool = True

    def envelope_tree(self) -> etree._Element:
        assertion = partner.xua_assertion(partner.Requester()) if self.with_xua else None
        data, _ = partner.envelope(
            self.action, _copy(self.body), to=f"https://gw.example{self.path}", assertion=assertion
        )
        return etree.fromstring(data, _SAFE)

    def envelope_bytes(self) -> bytes:
        return bytes(etree.tostring(self.envelope_tree(), xml_declaration=True, encoding="UTF-8"))


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el), _SAFE)


def _quqi(query_ext: str, quantity: int, status: str = "waitContinuedQueryResponse") -> Any:
    """A QUQI_IN000003UV01 continuation (or cancel with status aborted), ITI TF-2b 3.47.4.3."""
    h = partner.NS["hl7"]
    root = etree.Element(f"{{{h}}}QUQI_IN000003UV01", nsmap={None: h}, ITSVersion="XML_1.0")
    etree.SubElement(root, f"{{{h}}}id", root="1.2.3.4.5", extension=uuid.uuid4().hex)
    etree.SubElement(root, f"{{{h}}}creationTime", value="20250101120000")
    etree.SubElement(
        root, f"{{{h}}}interactionId", root="2.16.840.1.113883.1.6", extension="QUQI_IN000003UV01"
    )
    cap = etree.SubElement(root, f"{{{h}}}controlActProcess", classCode="CACT", moodCode="EVN")
    cont = etree.SubElement(cap, f"{{{h}}}queryContinuation")
    etree.SubElement(cont, f"{{{h}}}queryId", root="1.2.3.4.5.1.98", extension=query_ext)
    etree.SubElement(cont, f"{{{h}}}continuationQuantity", value=str(quantity))
    etree.SubElement(cont, f"{{{h}}}statusCode", code=status)
    return root


def _adhoc(query_id: str, slots: list[tuple[str, str]], home: str = "") -> etree._Element:
    root = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(
        root, f"{{{QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true"
    )
    query = etree.SubElement(root, f"{{{RIM}}}AdhocQuery", id=query_id)
    if home:
        query.set("home", home)
    for name, value in slots:
        slot = etree.SubElement(query, f"{{{RIM}}}Slot", name=name)
        etree.SubElement(
            etree.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value"
        ).text = value
    return root


@dataclass
class Seeds:
    """Valid requests for every transaction; ITI-39 seeds use a document that really exists."""

    items: list[Seed]

    @classmethod
    def build(cls, harness: SoapEdgeHarness) -> Seeds:
        a = partner.ACTIONS
        cx = f"{JANE}^^^&{NHS_OID}&ISO"
        pdq = partner.pdq_query(nhs_number=JANE, receiver_oid=HCID_OID)
        demo = partner.pdq_query(
            family="Smith", given="Jane", birth_date="20101022", gender="F", receiver_oid=HCID_OID
        )
        items = [
            Seed("iti47-id", "/iti47", a["iti47"], pdq),
            Seed("iti47-demographics", "/iti47", a["iti47"], demo),
            Seed("iti55-demographics", "/iti55", a["iti55"], _copy(demo)),
            Seed("iti38-find", "/iti38", a["iti38"], partner.find_documents(cx)),
            Seed(
                "iti38-find-objectref",
                "/iti38",
                a["iti38"],
                partner.find_documents(cx, return_type="ObjectRef"),
            ),
            Seed(
                "iti38-find-ondemand",
                "/iti38",
                a["iti38"],
                _adhoc(
                    partner.FIND_DOCUMENTS,
                    [
                        ("$XDSDocumentEntryPatientId", f"'{cx}'"),
                        ("$XDSDocumentEntryStatus", f"('{partner.APPROVED}')"),
                        ("$XDSDocumentEntryType", f"('{STABLE}','{ON_DEMAND}')"),
                    ],
                ),
            ),
            Seed("xca-find", "/xca", a["iti38"], partner.find_documents(cx)),
        ]
        # A real document for the retrieve seeds: query once, read its uniqueId.
        env = items[3].envelope_bytes()
        reply = partner.parse_reply(harness.post("/iti38", env))
        docs = partner.documents_in(reply)
        uid = docs[0].unique_id if docs else "2.25.1"
        ref = partner.DocumentRef(uid, REPO, HCID)
        items += [
            Seed(
                "iti38-getdocuments",
                "/iti38",
                a["iti38"],
                _adhoc(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"('{uid}')")], home=HCID),
            ),
            Seed("iti39-retrieve", "/iti39", a["iti39"], partner.retrieve([ref])),
            Seed(
                "iti39-retrieve-mixed",
                "/iti39",
                a["iti39"],
                partner.retrieve([ref, partner.DocumentRef("2.25.42", REPO, HCID)]),
            ),
            Seed(
                "iti47-continue",
                "/iti47",
                "urn:hl7-org:v3:QUQI_IN000003UV01_Continue",
                _quqi("q-1", 1),
            ),
            Seed(
                "iti47-cancel",
                "/iti47",
                "urn:hl7-org:v3:QUQI_IN000003UV01_Cancel",
                _quqi("q-1", 1, "aborted"),
            ),
        ]
        return cls(items)


# Values that differ on every build (ids, timestamps) would make the vocabulary unstable.
_VOLATILE = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-|^\d{14}$|^\d{4}-\d{2}-\d{2}T|^2\.25\.\d{20,}"
)


def vocabulary(seeds: Seeds) -> tuple[list[str], list[str], list[str]]:
    """(element Clark names, attribute names, text values) seen in the seeds, for mutations."""
    tags: set[str] = {
        f"{{{SOAP12}}}Envelope",
        f"{{{SOAP11}}}Envelope",
        f"{{{SOAP12}}}Header",
        f"{{{SOAP12}}}Body",
        f"{{{SOAP12}}}Fault",
        f"{{{XOP}}}Include",
        f"{{{WSA}}}FaultTo",
        f"{{{WSA}}}RelatesTo",
        "{urn:example:unknown}Block",
    }
    attrs: set[str] = {f"{{{SOAP12}}}mustUnderstand", f"{{{SOAP12}}}role", "href", "home"}
    texts: set[str] = set()
    for seed in seeds.items:
        for el in seed.envelope_tree().iter():
            if isinstance(el.tag, str):
                tags.add(el.tag)
                attrs.update(str(k) for k in el.attrib)
                texts.update(str(v) for v in el.attrib.values())
                if el.text and el.text.strip():
                    texts.add(el.text.strip())
    texts = {t for t in texts if not _VOLATILE.search(t)}
    texts.update(
        {
            JANE,
            JAYNE,
            RESTRICTED,
            UNKNOWN,
            INVALID,
            f"'{UNKNOWN}^^^&{NHS_OID}&ISO'",
            f"'{JANE}^^^&{CEID_OID}&ISO'",
            "('a','b'",
            "'''",
            "(,)",
            "http://www.w3.org/2005/08/addressing/none",
            "https://partner.example/reply",
            "cid:missing@x",
            "true",
            "1",
            "-1",
            "0",
            "99999999999999999999",
            HCID,
            HCID_OID,
            REPO,
            "urn:oid:1.2.3",
            "",
        }
    )
    return sorted(tags), sorted(attrs), sorted(texts)


# ---- Mutations ----
# One mutation: (kind, a, b, text). Indices pick elements modulo the current tree size, so any
# integers are valid and hypothesis can shrink them freely.
Mutation = tuple[str, int, int, str]
TREE_OPS = ("delete", "duplicate", "text", "attr", "rename", "move", "insert", "drop_attrs")


def _elements(root: etree._Element) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str)]


def mutate_tree(
    root: etree._Element, mutations: list[Mutation], vocab: tuple[list[str], list[str], list[str]]
) -> etree._Element:
    """Apply tree-level mutations in place (root is never removed); returns the root."""
    tags, attrs, _texts = vocab
    for kind, a, b, text in mutations:
        els = _elements(root)
        el = els[a % len(els)]
        if kind == "delete" and el is not root:
            parent = el.getparent()
            if parent is not None:
                parent.remove(el)
        elif kind == "duplicate" and el is not root:
            parent = el.getparent()
            if parent is not None:
                parent.insert(parent.index(el) + 1, _copy(el))
        elif kind == "text":
            el.text = text
        elif kind == "attr":
            el.set(attrs[b % len(attrs)], text)
        elif kind == "drop_attrs":
            el.attrib.clear()
        elif kind == "rename":
            el.tag = tags[b % len(tags)]
        elif kind == "move" and el is not root:
            target = els[b % len(els)]
            if el not in set(target.iterancestors()) and target is not el:
                target.append(el)
        elif kind == "insert":
            child = etree.SubElement(el, tags[b % len(tags)])
            child.text = text
    return root


def serialise(root: etree._Element, encoding: str = "UTF-8") -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding=encoding))


BYTE_OPS = ("truncate", "flip", "insert", "doctype", "declaration", "nest", "none")


def mutate_bytes(data: bytes, op: str, pos: int, blob: bytes) -> bytes:
    """Byte-level damage after serialisation (encoding, truncation, DTDs, nesting bombs)."""
    if not data:
        return blob
    at = pos % (len(data) + 1)
    if op == "truncate":
        return data[:at]
    if op == "flip":
        i = pos % len(data)
        return data[:i] + bytes([data[i] ^ (blob[0] if blob else 0xFF)]) + data[i + 1 :]
    if op == "insert":
        return data[:at] + blob + data[at:]
    if op == "doctype":
        dtd = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd"><!ENTITY a "aaaa">]>'
        decl_end = data.find(b"?>")
        at = decl_end + 2 if decl_end >= 0 else 0
        return data[:at] + dtd + data[at:]
    if op == "declaration":
        encodings = (b"ISO-8859-1", b"UTF-16", b"EBCDIC", b"", b"x" * 64)
        declared = encodings[pos % len(encodings)]
        body = data.split(b"?>", 1)[-1]
        return b'<?xml version="1.0" encoding="' + declared + b'"?>' + body + blob
    if op == "nest":
        depth = 1 + pos % 200
        body = data.split(b"?>", 1)[-1]
        return b"<a>" * depth + body + b"</a>" * depth
    return data


def mtom_wrap(
    envelope: bytes,
    attachments: dict[str, bytes],
    *,
    boundary: str = "",
    start: str | None = "<root@fuzz>",
    transfer_encoding: str = "binary",
    root_type: str = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"',
    line_end: bytes = b"\r\n",
) -> tuple[bytes, str]:
    """A multipart/related MTOM package; every knob can be fuzzed."""
    boundary = boundary or f"MIMEBoundary_{uuid.uuid4().hex}"
    nl = line_end
    out = [
        b"--" + boundary.encode("latin-1", "replace") + nl,
        b"Content-Type: " + root_type.encode("latin-1", "replace") + nl,
        b"Content-Transfer-Encoding: " + transfer_encoding.encode("latin-1", "replace") + nl,
        b"Content-ID: <root@fuzz>" + nl + nl,
        envelope if transfer_encoding != "base64" else base64.b64encode(envelope),
        nl,
    ]
    for cid, data in attachments.items():
        out += [
            b"--" + boundary.encode("latin-1", "replace") + nl,
            b"Content-Type: application/octet-stream" + nl,
            b"Content-Transfer-Encoding: binary" + nl,
            b"Content-ID: <" + cid.encode("latin-1", "replace") + b">" + nl + nl,
            data,
            nl,
        ]
    out.append(b"--" + boundary.encode("latin-1", "replace") + b"--" + nl)
    ctype = f'multipart/related; type="application/xop+xml"; boundary="{boundary}"'
    if start is not None:
        ctype += f'; start="{start}"'
    ctype += '; start-info="application/soap+xml"'
    return b"".join(out), ctype


def xop_replace(root: etree._Element, index: int, cid: str) -> etree._Element:
    """Replace one element's content with an xop:Include pointing at `cid`."""
    els = _elements(root)
    el = els[index % len(els)]
    for child in list(el):
        el.remove(child)
    el.text = None
    inc = etree.SubElement(el, f"{{{XOP}}}Include", nsmap={"xop": XOP})
    inc.set("href", f"cid:{cid}")
    return root


CONTENT_TYPES = (
    SOAP_CT,
    "application/soap+xml",
    'application/soap+xml; charset=UTF-8; action="urn:ihe:iti:2007:CrossGatewayQuery"',
    "text/xml; charset=utf-8",
    "application/xml",
    "application/json",
    "multipart/related",
    'multipart/related; boundary="x"',
    'multipart/related; type="text/plain"; boundary="b"',
    "multipart/form-data; boundary=x",
    "",
    "garbage",
    "application/soap+xml; charset=ebcdic",
    None,
)
