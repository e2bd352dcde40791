"""A test XCA partner (initiating gateway): builds ITI-47/38/39 requests and reads the answers.

Used by tests-e2e, the load test and `xcagw demo`. Messages are built with lxml and follow the
shapes of the public samples (IHE ITI TF-2b 3.38, 3.39; ITI TF-2c 3.47).
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import uuid
from dataclasses import dataclass, field

import httpx
from lxml import etree

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "hl7": "urn:hl7-org:v3",
    "query": "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0",
    "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
    "rs": "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0",
    "xdsb": "urn:ihe:iti:xds-b:2007",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "saml2": "urn:oasis:names:tc:SAML:2.0:assertion",
}
NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
ACTIONS = {
    "iti47": "urn:hl7-org:v3:PRPA_IN201305UV02",
    "iti55": "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
    "iti38": "urn:ihe:iti:2007:CrossGatewayQuery",
    "iti39": "urn:ihe:iti:2007:CrossGatewayRetrieve",
}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def _sub(parent: etree._Element, prefix: str, local: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, _q(prefix, local), attrib)


@dataclass
class Requester:
    """Who the partner says is asking (IHE XUA, ITI TF-2b 3.40.4.1.2 attributes)."""

    subject_id: str = "Dr Alice Example"
    organization: str = "Example Hospital"
    organization_id: str = "urn:oid:1.2.3.4.5.1"
    role_code: str = "112247003"  # SNOMED CT "Medical doctor"
    purpose_of_use: str = "TREATMENT"
    home_community_id: str = "urn:oid:1.2.3.4.5.1"
    issuer: str = "CN=xcagw dev partner"
    audience: str = ""
    lifetime_seconds: int = 300


def _attribute(statement: etree._Element, name: str) -> etree._Element:
    attr = _sub(statement, "saml2", "Attribute", Name=name)
    return _sub(attr, "saml2", "AttributeValue")


def xua_assertion(requester: Requester, *, resource_id: str = "") -> etree._Element:
    """An ITI-40 SAML 2.0 assertion (unsigned; `sign_assertion` adds the XML signature)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assertion = etree.Element(
        _q("saml2", "Assertion"),
        nsmap={"saml2": NS["saml2"], "xsi": NS["xsi"]},
        ID=f"_{uuid.uuid4()}",
        IssueInstant=now.strftime(fmt),
        Version="2.0",
    )
    issuer = _sub(
        assertion,
        "saml2",
        "Issuer",
        Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
    )
    issuer.text = requester.issuer
    subject = _sub(assertion, "saml2", "Subject")
    name_id = _sub(
        subject,
        "saml2",
        "NameID",
        Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
    )
    name_id.text = requester.subject_id
    _sub(subject, "saml2", "SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer")
    conditions = _sub(
        assertion,
        "saml2",
        "Conditions",
        NotBefore=now.strftime(fmt),
        NotOnOrAfter=(now + dt.timedelta(seconds=requester.lifetime_seconds)).strftime(fmt),
    )
    if requester.audience:
        restriction = _sub(conditions, "saml2", "AudienceRestriction")
        _sub(restriction, "saml2", "Audience").text = requester.audience
    authn = _sub(assertion, "saml2", "AuthnStatement", AuthnInstant=now.strftime(fmt))
    context = _sub(authn, "saml2", "AuthnContext")
    _sub(
        context, "saml2", "AuthnContextClassRef"
    ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
    statement = _sub(assertion, "saml2", "AttributeStatement")
    _attribute(
        statement, "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
    ).text = requester.subject_id
    _attribute(
        statement, "urn:oasis:names:tc:xspa:1.0:subject:organization"
    ).text = requester.organization
    _attribute(
        statement, "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
    ).text = requester.organization_id
    _attribute(statement, "urn:ihe:iti:xca:2010:homeCommunityId").text = requester.home_community_id
    role = _attribute(statement, "urn:oasis:names:tc:xacml:2.0:subject:role")
    etree.SubElement(
        role,
        _q("hl7", "Role"),
        {
            _q("xsi", "type"): "CE",
            "code": requester.role_code,
            "codeSystem": "2.16.840.1.113883.6.96",
            "codeSystemName": "SNOMED_CT",
        },
        nsmap={None: NS["hl7"]},
    )
    purpose = _attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse")
    etree.SubElement(
        purpose,
        _q("hl7", "PurposeOfUse"),
        {
            _q("xsi", "type"): "CE",
            "code": requester.purpose_of_use,
            "codeSystem": "2.16.840.1.113883.3.18.7.1",
            "codeSystemName": "nhin-purpose",
        },
        nsmap={None: NS["hl7"]},
    )
    if resource_id:
        _attribute(
            statement, "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
        ).text = resource_id
    return assertion


def sign_assertion(assertion: etree._Element, key_pem: bytes, cert_pem: bytes) -> etree._Element:
    """Enveloped XML signature (RSA-SHA256, exclusive c14n) placed after the Issuer."""
    from signxml.signer import XMLSigner  # dev/test-only dependency of the partner client

    signer = XMLSigner(c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    signed: etree._Element = signer.sign(
        assertion, key=key_pem, cert=cert_pem.decode(), reference_uri=assertion.get("ID")
    )
    # SAML 2.0 core 5.4.1: the Signature must follow the Issuer.
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    if signature is not None:
        signed.remove(signature)
        signed.insert(1, signature)
    return signed


def envelope(
    action: str,
    body: etree._Element,
    *,
    to: str,
    assertion: etree._Element | None = None,
) -> tuple[bytes, str]:
    """A SOAP 1.2 envelope with WS-Addressing headers; returns (bytes, MessageID)."""
    message_id = f"urn:uuid:{uuid.uuid4()}"
    env = etree.Element(_q("env", "Envelope"), nsmap={"env": NS["env"], "wsa": NS["wsa"]})
    header = _sub(env, "env", "Header")
    action_el = _sub(header, "wsa", "Action")
    action_el.set(_q("env", "mustUnderstand"), "true")
    action_el.text = action
    _sub(header, "wsa", "MessageID").text = message_id
    reply = _sub(header, "wsa", "ReplyTo")
    _sub(reply, "wsa", "Address").text = "http://www.w3.org/2005/08/addressing/anonymous"
    to_el = _sub(header, "wsa", "To")
    to_el.set(_q("env", "mustUnderstand"), "true")
    to_el.text = to
    if assertion is not None:
        security = etree.SubElement(header, _q("wsse", "Security"), nsmap={"wsse": NS["wsse"]})
        security.set(_q("env", "mustUnderstand"), "true")
        security.append(assertion)
    _sub(env, "env", "Body").append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8"), message_id


def _ii(parent: etree._Element, local: str, root: str, extension: str = "") -> etree._Element:
    el = _sub(parent, "hl7", local, root=root)
    if extension:
        el.set("extension", extension)
    return el


def pdq_query(
    *,
    nhs_number: str = "",
    family: str = "",
    given: str = "",
    birth_date: str = "",
    gender: str = "",
    sender_oid: str = "1.2.3.4.5.1",
    receiver_oid: str = "2.16.840.1.113883.3.9999.1",
    interaction: str = "PRPA_IN201305UV02",
) -> etree._Element:
    """A PRPA_IN201305UV02 query by NHS number and/or demographics (birth_date YYYYMMDD)."""
    root = etree.Element(
        _q("hl7", "PRPA_IN201305UV02"),
        nsmap={None: NS["hl7"], "xsi": NS["xsi"]},
        ITSVersion="XML_1.0",
    )
    _ii(root, "id", "1.2.3.4.5.1.99", uuid.uuid4().hex)
    _sub(root, "hl7", "creationTime", value=dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S"))
    _ii(root, "interactionId", "2.16.840.1.113883.1.6", interaction)
    _sub(root, "hl7", "processingCode", code="P")
    _sub(root, "hl7", "processingModeCode", code="T")
    _sub(root, "hl7", "acceptAckCode", code="AL")
    receiver = _sub(root, "hl7", "receiver", typeCode="RCV")
    device = _sub(receiver, "hl7", "device", classCode="DEV", determinerCode="INSTANCE")
    _ii(device, "id", receiver_oid)
    sender = _sub(root, "hl7", "sender", typeCode="SND")
    device = _sub(sender, "hl7", "device", classCode="DEV", determinerCode="INSTANCE")
    _ii(device, "id", sender_oid)
    cap = _sub(root, "hl7", "controlActProcess", classCode="CACT", moodCode="EVN")
    _sub(cap, "hl7", "code", code="PRPA_TE201305UV02", codeSystem="2.16.840.1.113883.1.6")
    qbp = _sub(cap, "hl7", "queryByParameter")
    _ii(qbp, "queryId", "1.2.3.4.5.1.98", uuid.uuid4().hex)
    _sub(qbp, "hl7", "statusCode", code="new")
    _sub(qbp, "hl7", "responseModalityCode", code="R")
    _sub(qbp, "hl7", "responsePriorityCode", code="I")
    params = _sub(qbp, "hl7", "parameterList")
    if gender:
        p = _sub(params, "hl7", "livingSubjectAdministrativeGender")
        _sub(p, "hl7", "value", code=gender, codeSystem="2.16.840.1.113883.5.1")
        _sub(p, "hl7", "semanticsText").text = "LivingSubject.administrativeGender"
    if birth_date:
        p = _sub(params, "hl7", "livingSubjectBirthTime")
        _sub(p, "hl7", "value", value=birth_date)
        _sub(p, "hl7", "semanticsText").text = "LivingSubject.birthTime"
    if nhs_number:
        p = _sub(params, "hl7", "livingSubjectId")
        _ii(p, "value", NHS_NUMBER_OID, nhs_number)
        _sub(p, "hl7", "semanticsText").text = "LivingSubject.id"
    if family or given:
        p = _sub(params, "hl7", "livingSubjectName")
        value = _sub(p, "hl7", "value")
        if given:
            _sub(value, "hl7", "given").text = given
        if family:
            _sub(value, "hl7", "family").text = family
        _sub(p, "hl7", "semanticsText").text = "LivingSubject.name"
    return root


def find_documents(patient_id: str, *, return_type: str = "LeafClass") -> etree._Element:
    """An AdhocQueryRequest for FindDocuments (Approved) for `nhs^^^&OID&ISO`."""
    root = etree.Element(
        _q("query", "AdhocQueryRequest"), nsmap={"query": NS["query"], "rim": NS["rim"]}
    )
    _sub(root, "query", "ResponseOption", returnType=return_type, returnComposedObjects="true")
    query = _sub(root, "rim", "AdhocQuery", id=FIND_DOCUMENTS)
    for name, value in (
        ("$XDSDocumentEntryPatientId", f"'{patient_id}'"),
        ("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
    ):
        slot = _sub(query, "rim", "Slot", name=name)
        _sub(_sub(slot, "rim", "ValueList"), "rim", "Value").text = value
    return root


def retrieve(documents: list[DocumentRef]) -> etree._Element:
    """A RetrieveDocumentSetRequest for the given documents."""
    root = etree.Element(_q("xdsb", "RetrieveDocumentSetRequest"), nsmap={"xdsb": NS["xdsb"]})
    for doc in documents:
        req = _sub(root, "xdsb", "DocumentRequest")
        _sub(req, "xdsb", "HomeCommunityId").text = doc.home_community_id
        _sub(req, "xdsb", "RepositoryUniqueId").text = doc.repository_unique_id
        _sub(req, "xdsb", "DocumentUniqueId").text = doc.unique_id
    return root


@dataclass
class DocumentRef:
    """What ITI-38 returned about one document, enough to retrieve it."""

    unique_id: str
    repository_unique_id: str
    home_community_id: str
    entry_uuid: str = ""
    mime_type: str = ""


@dataclass
class Reply:
    """A parsed HTTP reply from soap-edge."""

    status_code: int
    content_type: str
    envelope: etree._Element
    attachments: dict[str, bytes] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def body(self) -> etree._Element:
        return self.envelope.find(_q("env", "Body"))[0]  # type: ignore[index]

    def xpath(self, path: str) -> list[etree._Element]:
        return list(self.envelope.xpath(path, namespaces=NS))


def parse_reply(response: httpx.Response) -> Reply:
    """Parse a plain SOAP or an MTOM multipart reply; xop:Include parts are collected by cid."""
    content_type = response.headers.get("content-type", "")
    raw = response.content
    attachments: dict[str, bytes] = {}
    if content_type.lower().startswith("multipart/"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        parts = list(message.iter_parts())  # type: ignore[attr-defined]
        root_xml = bytes(parts[0].get_payload(decode=True))
        for part in parts[1:]:
            cid = str(part.get("Content-ID", "")).strip("<>")
            attachments[cid] = bytes(part.get_payload(decode=True))
    else:
        root_xml = raw
    env = etree.fromstring(root_xml, _PARSER)
    return Reply(response.status_code, content_type, env, attachments, raw)


class PartnerClient:
    """Sends IHE requests to a soap-edge base URL as an XCA initiating gateway would."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        requester: Requester | None = None,
        signing_key: bytes = b"",
        signing_cert: bytes = b"",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=60)
        # Partners send XUA with every transaction; None sends no assertion at all.
        self.requester = requester if requester is not None else Requester()
        self.send_xua = True
        self.signing_key = signing_key
        self.signing_cert = signing_cert

    def assertion(self) -> etree._Element | None:
        if not self.send_xua:
            return None
        element = xua_assertion(self.requester)
        if self.signing_key and self.signing_cert:
            element = sign_assertion(element, self.signing_key, self.signing_cert)
        return element

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(
        self, transaction: str, body: etree._Element, *, headers: dict[str, str] | None = None
    ) -> Reply:
        url = f"{self.base_url}/{transaction}"
        payload, _ = envelope(ACTIONS[transaction], body, to=url, assertion=self.assertion())
        response = await self._client.post(
            url,
            content=payload,
            headers={"Content-Type": "application/soap+xml; charset=UTF-8", **(headers or {})},
        )
        return parse_reply(response)

    async def pdq(self, **criteria: str) -> Reply:
        return await self.send("iti47", pdq_query(**criteria))

    async def find_documents(self, nhs_number: str) -> Reply:
        return await self.send("iti38", find_documents(f"{nhs_number}^^^&{NHS_NUMBER_OID}&ISO"))

    async def retrieve(self, documents: list[DocumentRef]) -> Reply:
        return await self.send("iti39", retrieve(documents))


def documents_in(reply: Reply) -> list[DocumentRef]:
    """The DocumentEntries of an ITI-38 LeafClass answer."""
    refs: list[DocumentRef] = []
    for obj in reply.xpath("//rim:ExtrinsicObject"):
        unique_id = obj.xpath(
            "rim:ExternalIdentifier[@identificationScheme="
            "'urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']/@value",
            namespaces=NS,
        )
        repo = obj.xpath(
            "rim:Slot[@name='repositoryUniqueId']/rim:ValueList/rim:Value/text()", namespaces=NS
        )
        refs.append(
            DocumentRef(
                unique_id=str(unique_id[0]) if unique_id else "",
                repository_unique_id=str(repo[0]) if repo else "",
                home_community_id=str(obj.get("home", "")),
                entry_uuid=str(obj.get("id", "")),
                mime_type=str(obj.get("mimeType", "")),
            )
        )
    return refs


def retrieved_documents(reply: Reply) -> list[tuple[str, bytes]]:
    """(DocumentUniqueId, bytes) for each DocumentResponse, resolving xop:Include parts."""
    import base64

    out: list[tuple[str, bytes]] = []
    for resp in reply.xpath("//xdsb:DocumentResponse"):
        uid = resp.findtext(_q("xdsb", "DocumentUniqueId"), default="")
        doc = resp.find(_q("xdsb", "Document"))
        if doc is None:
            continue
        include = doc.find(_q("xop", "Include"))
        if include is not None:
            cid = include.get("href", "").removeprefix("cid:")
            from urllib.parse import unquote

            data = reply.attachments.get(unquote(cid), b"")
        else:
            data = base64.b64decode(doc.text or "")
        out.append((uid, data))
    return out
