"""Test kit for soap-edge: fake backends (grpc.aio servers), request builders, the checker."""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib.util
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from xml.sax.saxutils import escape

import grpc
import httpx
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lxml import etree

from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw.pds.v1 import pds_adapter_pb2, pds_adapter_pb2_grpc
from xcagw_common.errors import abort
from xcagw_common.testing import shared_dir

HCID_OID = "2.16.840.1.113883.2.1.3.34.9001"
HCID = f"urn:oid:{HCID_OID}"
REPO = "2.16.840.1.113883.2.1.3.34.9001.2"
NHS_OID = "2.16.840.1.113883.2.1.4.1"
CEID_OID = "1.2.840.114350.1.13.525.3.7.3.688884.100"

JANE = "9000000009"  # PDS sandbox: Jane Smith, GP Y12345
JAYNE = "9000000017"  # PDS sandbox: Jayne Smyth
RESTRICTED = "9000000025"  # PDS sandbox: restricted (R)
MINIMAL = "9000000033"  # PDS sandbox: minimal record, no GP
SUPERSEDED = "9111231130"  # valid number that the fake resolves to JANE
UNKNOWN = "9999999999"  # valid number, not in PDS
INVALID = "9000000001"  # fails Modulus 11

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
HL7 = "urn:hl7-org:v3"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
NS = {"env": SOAP, "wsa": WSA, "h": HL7, "rim": RIM, "rs": RS, "query": QUERY, "xdsb": XDSB}

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


# ---- Fake backends ------------------------------------------------------------------------------
def _patient(
    nhs: str, family: str, given: str, gender: str, birth: str, **extra: Any
) -> pds_adapter_pb2.Patient:
    return pds_adapter_pb2.Patient(
        nhs_number=nhs,
        names=[
            pds_adapter_pb2.HumanName(use="usual", family=family, given=[given], prefix=["Mrs"])
        ],
        gender=gender,
        birth_date=birth,
        **{"security_label": "U", **extra},
    )


def canned_patients() -> dict[str, pds_adapter_pb2.Patient]:
    jane = _patient(
        JANE,
        "Smith",
        "Jane",
        "female",
        "2010-10-22",
        addresses=[
            pds_adapter_pb2.Address(
                use="home",
                line=["1 Trevelyan Square", "Boar Lane"],
                city="Leeds",
                postal_code="LS1 6AE",
            )
        ],
        telecoms=[pds_adapter_pb2.ContactPoint(system="phone", value="01632 960587", use="home")],
        gp_ods_code="Y12345",
    )
    jayne = _patient(JAYNE, "Smyth", "Jayne", "female", "2005-06-16", gp_ods_code="Y12345")
    minimal = _patient(MINIMAL, "Minimal", "Min", "unknown", "1990-01-01")
    return {JANE: jane, JAYNE: jayne, MINIMAL: minimal}


@dataclass
class FakeState:
    """What the fakes answer; tests change it and read the call counters."""

    patients: dict[str, pds_adapter_pb2.Patient] = field(default_factory=canned_patients)
    restricted_as_error: bool = True
    pds_failure: tuple[grpc.StatusCode, str] | None = None
    gpc_failure: tuple[grpc.StatusCode, str] | None = None
    ccda_failure: tuple[grpc.StatusCode, str] | None = None
    gpc_delay: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    last_context: Any = None


class FakePds(pds_adapter_pb2_grpc.PdsAdapterServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def GetPatient(self, request: Any, context: Any) -> Any:
        st = self.state
        st.calls["GetPatient"] += 1
        st.last_context = request.context
        if st.pds_failure:
            await abort(context, st.pds_failure[0], "failure", st.pds_failure[1])
        nhs = request.nhs_number
        if nhs == RESTRICTED:
            if st.restricted_as_error:
                await abort(
                    context, grpc.StatusCode.FAILED_PRECONDITION, "restricted", "RESTRICTED_PATIENT"
                )
            patient = _patient(
                RESTRICTED,
                "Smythe",
                "Janet",
                "female",
                "2005-06-16",
                restricted=True,
                security_label="R",
            )
            return pds_adapter_pb2.GetPatientResponse(patient=patient)
        if nhs == SUPERSEDED:
            patient = pds_adapter_pb2.Patient()
            patient.CopyFrom(st.patients[JANE])
            patient.superseded_from = SUPERSEDED
            return pds_adapter_pb2.GetPatientResponse(patient=patient)
        if nhs not in st.patients:
            await abort(context, grpc.StatusCode.NOT_FOUND, "not found", "RESOURCE_NOT_FOUND")
        return pds_adapter_pb2.GetPatientResponse(patient=st.patients[nhs])

    async def SearchPatients(self, request: Any, context: Any) -> Any:
        st = self.state
        st.calls["SearchPatients"] += 1
        st.last_context = request
        if st.pds_failure:
            await abort(context, st.pds_failure[0], "failure", st.pds_failure[1])
        family = request.family.lower()
        if family == "jones":
            await abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "too many", "TOO_MANY_MATCHES"
            )
        if family == "multi":
            pts = [
                _patient(n, "Multi", f"P{i}", "male", "1970-01-01")
                for i, n in enumerate((JANE, JAYNE, MINIMAL))
            ]
            return pds_adapter_pb2.SearchPatientsResponse(patients=pts, scores=[0.9, 0.8, 0.7])
        if family == "smythe":
            hidden = _patient(
                RESTRICTED,
                "Smythe",
                "Janet",
                "female",
                "2005-06-16",
                restricted=True,
                security_label="R",
            )
            return pds_adapter_pb2.SearchPatientsResponse(patients=[hidden], scores=[1.0])
        for p in st.patients.values():
            if (
                p.names[0].family.lower() == family
                and request.birth_date_from <= p.birth_date <= request.birth_date_to
            ):
                return pds_adapter_pb2.SearchPatientsResponse(patients=[p], scores=[0.95])
        return pds_adapter_pb2.SearchPatientsResponse()


class FakeGpConnect(gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def LookupEndpoint(self, request: Any, context: Any) -> Any:
        return gpconnect_adapter_pb2.LookupEndpointResponse(ods_code=request.ods_code)

    async def GetStructuredRecord(self, request: Any, context: Any) -> Any:
        st = self.state
        st.calls["GetStructuredRecord"] += 1
        st.last_context = request.context
        if st.gpc_delay:
            await asyncio.sleep(st.gpc_delay)
        if st.gpc_failure:
            await abort(context, st.gpc_failure[0], "failure", st.gpc_failure[1])
        bundle = f'{{"resourceType":"Bundle","type":"collection","id":"{request.nhs_number}"}}'
        return gpconnect_adapter_pb2.GetStructuredRecordResponse(
            bundle_json=bundle.encode(), ods_code="Y12345", nhs_number=request.nhs_number
        )


def fake_ccd(doc_ext: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><realmCode code="GB"/>'
        f'<id root="2.16.840.1.113883.2.1.3.34.9001.1" extension="{doc_ext}"/>'
        "<title>Summary of GP record</title>"
        '<effectiveTime value="20250101120000+0100"/>'
        '<documentationOf><serviceEvent classCode="PCPR"><effectiveTime>'
        '<low value="20100101"/><high value="20250101120000+0100"/>'
        "</effectiveTime></serviceEvent></documentationOf>"
        "<component><structuredBody/></component></ClinicalDocument>\n"
    ).encode()


class FakeCcda(ccda_converter_pb2_grpc.CcdaConverterServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def ConvertBundle(self, request: Any, context: Any) -> Any:
        st = self.state
        st.calls["ConvertBundle"] += 1
        if st.ccda_failure:
            await abort(context, st.ccda_failure[0], "failure", st.ccda_failure[1])
        ext = str(uuid.uuid4())
        return ccda_converter_pb2.ConvertBundleResponse(
            ccd_xml=fake_ccd(ext), document_id=f"2.16.840.1.113883.2.1.3.34.9001.1^{ext}"
        )

    async def RenderHtml(self, request: Any, context: Any) -> Any:
        return ccda_converter_pb2.RenderHtmlResponse(html="<html/>")


class FakeBackends:
    """Four grpc.aio servers (with health) on free ports, run by their own event loop thread.

    A separate loop keeps them serving while a test blocks (TestClient) or runs its own loop.
    """

    NAMES = ("pds-adapter", "gpconnect-adapter", "ccda-converter", "token-service")

    def __init__(self) -> None:
        self.state = FakeState()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.addrs: dict[str, str] = {}
        self._servers: list[grpc.aio.Server] = []
        self._health: dict[str, Any] = {}
        self._serving: dict[str, bool] = {}

    def start(self) -> FakeBackends:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        for name in self.NAMES:
            server = grpc.aio.server()
            hs = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(hs, server)
            if name == "pds-adapter":
                pds_adapter_pb2_grpc.add_PdsAdapterServiceServicer_to_server(
                    FakePds(self.state), server
                )
            elif name == "gpconnect-adapter":
                gpconnect_adapter_pb2_grpc.add_GpConnectAdapterServiceServicer_to_server(
                    FakeGpConnect(self.state), server
                )
            elif name == "ccda-converter":
                ccda_converter_pb2_grpc.add_CcdaConverterServiceServicer_to_server(
                    FakeCcda(self.state), server
                )
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            await hs.set("", health_pb2.HealthCheckResponse.SERVING)
            self.addrs[name] = f"127.0.0.1:{port}"
            self._servers.append(server)
            self._health[name] = hs

    def set_serving(self, name: str, serving: bool) -> None:
        self._serving[name] = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        asyncio.run_coroutine_threadsafe(self._health[name].set("", status), self.loop).result(5)

    def reset(self) -> None:
        fresh = FakeState()
        for attr in fresh.__dataclass_fields__:
            setattr(self.state, attr, getattr(fresh, attr))
        for name in self.NAMES:
            if not self._serving.get(name, True):
                self.set_serving(name, True)

    def stop(self) -> None:
        async def _stop() -> None:
            for server in self._servers:
                await server.stop(0)

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# ---- Request builders ---------------------------------------------------------------------------
def envelope(
    action: str,
    body: str,
    *,
    message_id: str | None = None,
    reply_to: str | None = None,
    extra_headers: str = "",
    include_message_id: bool = True,
) -> bytes:
    mid = message_id or f"urn:uuid:{uuid.uuid4()}"
    parts = [f'<wsa:Action env:mustUnderstand="true">{action}</wsa:Action>']
    if include_message_id:
        parts.append(f"<wsa:MessageID>{mid}</wsa:MessageID>")
    if reply_to:
        parts.append(f"<wsa:ReplyTo><wsa:Address>{escape(reply_to)}</wsa:Address></wsa:ReplyTo>")
    parts.append("<wsa:To>https://gateway.example/xca</wsa:To>")
    parts.append(extra_headers)
    return (
        f'<env:Envelope xmlns:env="{SOAP}" xmlns:wsa="{WSA}"><env:Header>{"".join(parts)}'
        f"</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def pdq_body(
    *,
    ids: list[tuple[str, str]] = (),  # type: ignore[assignment]
    family: str | None = None,
    given: list[str] | None = None,
    birth: str | None = None,
    gender: str | None = None,
    postal: str | None = None,
    other_ids: list[str] = (),  # type: ignore[assignment]
    initial_quantity: int | None = None,
    message_ext: str = "msg-1",
    query_ext: str | None = None,
    xcpd_initiator: str | None = None,
) -> str:
    params = []
    if gender:
        params.append(_param("livingSubjectAdministrativeGender", f'<value code="{gender}"/>'))
    if birth:
        params.append(_param("livingSubjectBirthTime", f'<value value="{birth}"/>'))
    for root, ext in ids:
        params.append(_param("livingSubjectId", f'<value root="{root}" extension="{ext}"/>'))
    if family or given:
        names = "".join(f"<given>{g}</given>" for g in given or [])
        names += f"<family>{family}</family>" if family else ""
        params.append(_param("livingSubjectName", f"<value>{names}</value>"))
    for root in other_ids:
        params.append(_param("otherIDsScopingOrganization", f'<value root="{root}"/>'))
    if postal:
        params.append(_param("patientAddress", f"<value><postalCode>{postal}</postalCode></value>"))
    iq = f'<initialQuantity value="{initial_quantity}"/>' if initial_quantity else ""
    author = ""
    if xcpd_initiator:
        author = (
            '<authorOrPerformer typeCode="AUT"><assignedDevice classCode="ASSIGNED">'
            f'<id root="{xcpd_initiator}"/></assignedDevice></authorOrPerformer>'
        )
    qext = query_ext or f"q-{uuid.uuid4().hex[:8]}"
    return (
        f'<PRPA_IN201305UV02 xmlns="{HL7}" ITSVersion="XML_1.0">'
        f'<id root="1.2.3.4.5" extension="{message_ext}"/>'
        + _HL7_HEAD.format(interaction="PRPA_IN201305UV02")
        + '<asAgent classCode="AGNT"><representedOrganization classCode="ORG" '
        'determinerCode="INSTANCE"><id root="1.2.3.4"/></representedOrganization></asAgent>'
        "</device></sender>"
        '<controlActProcess classCode="CACT" moodCode="EVN">'
        f'<code code="PRPA_TE201305UV02" codeSystem="2.16.840.1.113883.1.6"/>{author}'
        f'<queryByParameter><queryId root="1.2.3.4.7" extension="{qext}"/>'
        '<statusCode code="new"/><responseModalityCode code="R"/>'
        f'<responsePriorityCode code="I"/>{iq}'
        f"<parameterList>{''.join(params)}</parameterList></queryByParameter>"
        "</controlActProcess></PRPA_IN201305UV02>"
    )


# Transmission wrapper from creationTime to the sender's device id (the caller closes the sender).
_HL7_HEAD = (
    '<creationTime value="20250101120000"/>'
    '<interactionId root="2.16.840.1.113883.1.6" extension="{interaction}"/>'
    '<processingCode code="T"/><processingModeCode code="T"/><acceptAckCode code="AL"/>'
    '<receiver typeCode="RCV"><device classCode="DEV" determinerCode="INSTANCE">'
    '<id root="2.16.840.1.113883.2.1.3.34.9001"/></device></receiver>'
    '<sender typeCode="SND"><device classCode="DEV" determinerCode="INSTANCE">'
    '<id root="1.2.3.4.99"/>'
)


def _param(name: str, value: str) -> str:
    semantics = {
        "livingSubjectAdministrativeGender": "LivingSubject.administrativeGender",
        "livingSubjectBirthTime": "LivingSubject.birthTime",
        "livingSubjectId": "LivingSubject.id",
        "livingSubjectName": "LivingSubject.name",
        "otherIDsScopingOrganization": "OtherIDs.scopingOrganization.id",
        "patientAddress": "Patient.address",
    }[name]
    return f"<{name}>{value}<semanticsText>{semantics}</semanticsText></{name}>"


def quqi_body(query_ext: str, quantity: int | None, status: str) -> str:
    qty = f'<continuationQuantity value="{quantity}"/>' if quantity else ""
    return (
        f'<QUQI_IN000003UV01 xmlns="{HL7}" ITSVersion="XML_1.0">'
        '<id root="1.2.3.4.5" extension="cont-1"/>'
        + _HL7_HEAD.format(interaction="QUQI_IN000003UV01")
        + "</device></sender>"
        '<controlActProcess classCode="CACT" moodCode="EVN">'
        '<code code="PRPA_TE000003UV01" codeSystem="2.16.840.1.113883.1.6"/>'
        f'<queryContinuation><queryId root="1.2.3.4.7" extension="{query_ext}"/>{qty}'
        f'<statusCode code="{status}"/></queryContinuation>'
        "</controlActProcess></QUQI_IN000003UV01>"
    )


def cx(nhs: str, oid: str = NHS_OID) -> str:
    return f"{nhs}^^^&amp;{oid}&amp;ISO"


Slots = dict[str, list[str]] | list[tuple[str, list[str]]]


def adhoc_body(
    query_id: str,
    slots: Slots,
    *,
    return_type: str = "LeafClass",
    home: str | None = None,
) -> str:
    """An AdhocQueryRequest; a list of (name, values) pairs may repeat a Slot (AND semantics)."""
    pairs = list(slots.items()) if isinstance(slots, dict) else slots
    slot_xml = ""
    for name, values in pairs:
        value_xml = "".join(f"<rim:Value>{v}</rim:Value>" for v in values)
        slot_xml += f'<rim:Slot name="{name}"><rim:ValueList>{value_xml}</rim:ValueList></rim:Slot>'

    home_attr = f' home="{home}"' if home else ""
    return (
        f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}">'
        f'<query:ResponseOption returnType="{return_type}" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{query_id}"{home_attr}>{slot_xml}</rim:AdhocQuery>'
        "</query:AdhocQueryRequest>"
    )


def find_documents(
    nhs: str = JANE,
    *,
    oid: str = NHS_OID,
    extra: Slots | None = None,
    return_type: str = "LeafClass",
) -> str:
    base = {
        "$XDSDocumentEntryPatientId": [f"'{cx(nhs, oid)}'"],
        "$XDSDocumentEntryStatus": [f"('{APPROVED}')"],
    }
    if isinstance(extra, list):
        return adhoc_body(FIND_DOCUMENTS, [*base.items(), *extra], return_type=return_type)
    return adhoc_body(FIND_DOCUMENTS, {**base, **(extra or {})}, return_type=return_type)


def retrieve_body(*docs: tuple[str | None, str, str]) -> str:
    reqs = []
    for home, repo, uid in docs:
        home_xml = (
            f"<xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>" if home is not None else ""
        )
        reqs.append(
            f"<xdsb:DocumentRequest>{home_xml}"
            f"<xdsb:RepositoryUniqueId>{repo}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        )
    return (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{XDSB}">{"".join(reqs)}'
        "</xdsb:RetrieveDocumentSetRequest>"
    )


def mtom_wrap(
    envelope_bytes: bytes, attachments: dict[str, bytes] | None = None
) -> tuple[bytes, str]:
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    out = [
        f"--{boundary}\r\n".encode(),
        b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n',
        b"Content-Transfer-Encoding: binary\r\nContent-ID: <root.message@test>\r\n\r\n",
        envelope_bytes,
        b"\r\n",
    ]
    for cid, data in (attachments or {}).items():
        head = (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"
        )
        out += [head.encode(), data, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    ct = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        'start="<root.message@test>"; start-info="application/soap+xml"'
    )
    return b"".join(out), ct


SOAP_CT = "application/soap+xml; charset=UTF-8"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
UNIQUE_ID = f"string(//rim:ExternalIdentifier[@identificationScheme='{UNIQUE_ID_SCHEME}']/@value)"


async def post(
    client: httpx.AsyncClient, path: str, data: bytes, content_type: str = SOAP_CT
) -> httpx.Response:
    return await client.post(path, content=data, headers={"content-type": content_type})


# ---- Response reading ---------------------------------------------------------------------------
@dataclass
class SoapResponse:
    status: int
    content_type: str
    raw: bytes
    root: etree._Element
    attachments: dict[str, bytes]

    @property
    def payload(self) -> etree._Element:
        return self.root.find("env:Body", NS)[0]  # type: ignore[index]

    def header(self, local: str) -> str | None:
        return self.root.findtext(f"env:Header/wsa:{local}", namespaces=NS)

    def xpath(self, path: str) -> Any:
        return self.root.xpath(path, namespaces=NS)


def read_response(resp: httpx.Response) -> SoapResponse:
    """Parse independently of the code under test (stdlib email for MIME)."""
    ct = resp.headers.get("content-type", "")
    attachments: dict[str, bytes] = {}
    if ct.startswith("multipart/related"):
        msg = email.message_from_bytes(
            b"Content-Type: " + ct.encode() + b"\r\n\r\n" + resp.content, policy=email.policy.HTTP
        )
        parts = list(msg.iter_parts())  # type: ignore[attr-defined]
        root_bytes = parts[0].get_payload(decode=True)
        for part in parts[1:]:
            attachments[part["content-id"].strip("<>")] = part.get_payload(decode=True)
    else:
        assert ct.startswith("application/soap+xml"), ct
        root_bytes = resp.content
    root = etree.fromstring(root_bytes)
    return SoapResponse(resp.status_code, ct, resp.content, root, attachments)


# ---- The shared conformance checker -------------------------------------------------------------
class Conformance:
    """Runs ../shared/conformance/validate_check.py (official XSDs + IHE lint) in-process."""

    def __init__(self) -> None:
        self.dir = shared_dir() / "conformance"
        self.module: ModuleType | None = None
        if (self.dir / "validate_check.py").exists():
            spec = importlib.util.spec_from_file_location(
                "xcagw_validate_check", self.dir / "validate_check.py"
            )
            assert spec and spec.loader
            self.module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self.module)

    @property
    def available(self) -> bool:
        return self.module is not None

    def check(
        self, data: bytes, tmp_dir: Path, *, allow_warnings: tuple[str, ...] = ()
    ) -> tuple[str, list[str], list[str]]:
        """(transaction, warnings, errors); asserts strict PASS (no errors, no warnings)."""
        if self.module is None:
            return "?", [], []
        path = tmp_dir / f"msg-{uuid.uuid4().hex}.xml"
        path.write_bytes(data)
        status, txn, _notes, warns, errors = self.module.check(str(path), str(self.dir / "schemas"))
        unexpected = [w for w in warns if not any(a in w for a in allow_warnings)]
        assert status == "PASS" and not errors and not unexpected, (
            f"{txn}: errors={errors} warnings={warns}"
        )
        return txn, warns, errors
