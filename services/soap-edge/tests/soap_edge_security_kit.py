"""Test kit for the security layer: throwaway PKI, signed XUA assertions, SOAP envelopes."""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree
from lxml.builder import ElementMaker
from signxml import XMLSigner  # type: ignore[attr-defined]
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from soap_edge_testkit import JANE
from soap_edge_testkit import envelope as soap_envelope

from soap_edge.app import create_app
from soap_edge.config import Settings
from soap_edge.security.partners import Partner, PartnerRegistry, fingerprint
from xcagw_devstack.syslog_sink import SyslogSink

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
HL7 = "urn:hl7-org:v3"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
HOLDER_OF_KEY = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"

AUDIENCE = "urn:xcagw:test:audience"
CERT_HEADER = "x-client-cert"
PARTNER_HCID = "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
HCID_IHE = "urn:ihe:iti:xca:2010:homeCommunityId"
HCID_NHIN = "urn:nhin:names:saml:homeCommunityId"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"


# ---- PKI -----------------------------------------------------------------------------------------
@dataclass
class KeyPair:
    key: Any
    cert: x509.Certificate
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> bytes:
        return bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def write(self, directory: Path, name: str) -> KeyPair:
        self.cert_file = directory / f"{name}.crt"
        self.key_file = directory / f"{name}.key"
        self.cert_file.write_text(self.cert_pem)
        self.key_file.write_bytes(self.key_pem)
        return self


def _name(cn: str, org: str = "xcagw tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )


def make_cert(
    cn: str,
    *,
    issuer: KeyPair | None = None,
    ca: bool = False,
    ecdsa: bool = False,
    days: int = 30,
    not_before: dt.datetime | None = None,
    server: bool = False,
    client: bool = False,
) -> KeyPair:
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if ecdsa
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return KeyPair(key, cert)


@dataclass
class Pki:
    """CA, a server cert for 127.0.0.1/localhost, partner client certs, SAML issuer certs."""

    directory: Path
    ca: KeyPair = field(init=False)
    server: KeyPair = field(init=False)
    partner: KeyPair = field(init=False)
    stranger: KeyPair = field(init=False)
    issuer: KeyPair = field(init=False)
    rogue_issuer: KeyPair = field(init=False)

    def __post_init__(self) -> None:
        d = self.directory
        self.ca = make_cert("xcagw test CA", ca=True, days=365).write(d, "ca")
        self.server = make_cert("localhost", issuer=self.ca, server=True).write(d, "server")
        self.partner = make_cert("partner-gw", issuer=self.ca, client=True).write(d, "partner")
        self.stranger = make_cert("stranger-gw", issuer=self.ca, client=True).write(d, "stranger")
        self.issuer = make_cert("partner SAML issuer").write(d, "issuer")
        self.rogue_issuer = make_cert("rogue SAML issuer").write(d, "rogue")


# ---- Assertions ----------------------------------------------------------------------------------
def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ce(tag: str, code: str, system: str, display: str) -> etree._Element:
    el = etree.Element(f"{{{HL7}}}{tag}", nsmap={None: HL7, "xsi": XSI})
    el.set(f"{{{XSI}}}type", "CE")
    el.set("code", code)
    el.set("codeSystem", system)
    el.set("displayName", display)
    return el


def default_attributes(nhs_number: str = "9000000009") -> dict[str, list[Any]]:
    return {
        SUBJECT_ID: ["CONE, Stephen"],
        ORGANIZATION: ["UCLH - University College London Hospitals - TST"],
        ORGANIZATION_ID: ["urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"],
        ROLE: [_ce("Role", "224608005", "2.16.840.1.113883.6.96", "Administrative staff")],
        PURPOSE: [_ce("PurposeOfUse", "TREATMENT", "2.16.840.1.113883.3.18.7.1", "Treatment")],
        HCID_IHE: [PARTNER_HCID],
        RESOURCE_ID: [f"{nhs_number}^^^&2.16.840.1.113883.2.1.4.1&ISO"],
    }


def build_assertion(
    *,
    assertion_id: str | None = None,
    issuer: str = "https://idp.partner.example",
    name_id: str = "user-42@partner.example",
    issue_instant: dt.datetime = NOW,
    not_before: dt.datetime | None = None,
    not_on_or_after: dt.datetime | None = None,
    audiences: list[str] | None = None,
    confirmation: str = BEARER,
    hok_cert: x509.Certificate | None = None,
    attributes: dict[str, list[Any]] | None = None,
    conditions: bool = True,
) -> etree._Element:
    """An unsigned saml2:Assertion (with a signature placeholder after Issuer)."""
    s = ElementMaker(namespace=SAML2, nsmap={"saml2": SAML2, "xsi": XSI, "hl7": HL7})
    aid = assertion_id or f"_{uuid.uuid4().hex}"
    assertion = s.Assertion(
        s.Issuer(issuer), ID=aid, IssueInstant=_time(issue_instant), Version="2.0"
    )
    assertion.append(etree.Element(f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS}))
    confirmation_el = s.SubjectConfirmation(Method=confirmation)
    if hok_cert is not None:
        data = s.SubjectConfirmationData()
        key_info = etree.SubElement(data, f"{{{DS}}}KeyInfo", nsmap={"ds": DS})
        x509_data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
        der = hok_cert.public_bytes(serialization.Encoding.DER)
        import base64

        etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = base64.b64encode(
            der
        ).decode()
        confirmation_el.append(data)
    assertion.append(s.Subject(s.NameID(name_id), confirmation_el))
    if conditions:
        cond = s.Conditions(
            NotBefore=_time(not_before or issue_instant - dt.timedelta(minutes=1)),
            NotOnOrAfter=_time(not_on_or_after or issue_instant + dt.timedelta(minutes=10)),
        )
        for audience in audiences if audiences is not None else [AUDIENCE]:
            cond.append(s.AudienceRestriction(s.Audience(audience)))
        assertion.append(cond)
    statement = s.AttributeStatement()
    for name, values in (attributes if attributes is not None else default_attributes()).items():
        attr = s.Attribute(Name=name)
        for value in values:
            av = s.AttributeValue()
            if isinstance(value, str):
                av.text = value
            else:
                av.append(copy.deepcopy(value))
            attr.append(av)
        statement.append(attr)
    assertion.append(statement)
    assertion.append(
        s.AuthnStatement(
            s.AuthnContext(s.AuthnContextClassRef("urn:oasis:names:tc:SAML:2.0:ac:classes:X509")),
            AuthnInstant=_time(issue_instant),
        )
    )
    return assertion


def sign(
    assertion: etree._Element,
    signer: KeyPair,
    *,
    signature_method: SignatureMethod = SignatureMethod.RSA_SHA256,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    c14n: CanonicalizationMethod = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    embed_cert: bool = True,
) -> etree._Element:
    """Enveloped XML-DSig over the assertion (Reference URI = #ID), as an IdP would."""
    xml_signer = XMLSigner(
        signature_algorithm=signature_method, digest_algorithm=digest, c14n_algorithm=c14n
    )
    signed = xml_signer.sign(
        assertion,
        key=signer.key,
        cert=[signer.cert] if embed_cert else None,
        reference_uri=f"#{assertion.get('ID')}",
        always_add_key_value=False,
    )
    if not embed_cert:
        for key_info in signed.iter(f"{{{DS}}}KeyInfo"):
            if key_info.getparent().tag == f"{{{DS}}}Signature":
                key_info.getparent().remove(key_info)
    # Round-trip: the verifier sees bytes on the wire, not this tree.
    return etree.fromstring(etree.tostring(signed))


def envelope(
    *security_children: etree._Element,
    body: etree._Element | None = None,
    action: str = "urn:ihe:iti:2007:CrossGatewayQuery",
    with_security: bool = True,
) -> etree._Element:
    """A SOAP 1.2 request envelope with WS-A headers and wsse:Security holding the children."""
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12, "wsa": WSA, "wsse": WSSE})
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    etree.SubElement(header, f"{{{WSA}}}Action").text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    if with_security:
        security = etree.SubElement(header, f"{{{WSSE}}}Security")
        security.set(f"{{{SOAP12}}}mustUnderstand", "true")
        for child in security_children:
            security.append(copy.deepcopy(child))
    b = etree.SubElement(env, f"{{{SOAP12}}}Body")
    b.append(body if body is not None else etree.Element("{urn:test}Payload"))
    # As received: serialised and parsed again.
    return etree.fromstring(etree.tostring(env))


def security_header(env: etree._Element) -> etree._Element:
    found = env.find(f"{{{SOAP12}}}Header/{{{WSSE}}}Security")
    assert found is not None
    return found


# ---- soap-edge with the security layer on (fixtures imported by the test modules) ------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def registry(pki: Pki, **partner: Any) -> dict[str, Any]:
    return {
        "partners": [
            {
                "id": "epic",
                "client_certificates": [{"sha256": fingerprint(pki.partner.cert)}],
                "home_community_ids": [PARTNER_HCID],
                "transactions": ["ITI-38", "ITI-39", "ITI-47"],
                "saml": {"issuer_certificates": [pki.issuer.cert_pem]},
                **partner,
            }
        ]
    }


def secure_settings(base: Settings, pki: Pki, **overrides: Any) -> Settings:
    """The test settings (real Redis, fake backends) with the security layer fully on."""
    values: dict[str, Any] = {
        "partner_registry": registry(pki),
        "allow_insecure_dev_partners": False,
        "trusted_proxy_cidrs": ["127.0.0.1/32"],
        "client_cert_header": CERT_HEADER,
        "xua_audiences": [AUDIENCE],
        **overrides,
    }
    return base.model_copy(update=values)


@pytest.fixture
def app_factory(settings: Settings, pki: Pki) -> Callable[..., Any]:
    """An async context manager giving an httpx client on a secured soap-edge."""

    class _Running:
        def __init__(self, **overrides: Any) -> None:
            self.settings = secure_settings(settings, pki, **overrides)
            self.app = create_app(self.settings)

        async def __aenter__(self) -> httpx.AsyncClient:
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()
            transport = httpx.ASGITransport(app=self.app)
            self._client = httpx.AsyncClient(transport=transport, base_url="http://soap-edge.test")
            self._client.app = self.app  # type: ignore[attr-defined]
            return self._client

        async def __aexit__(self, *exc: object) -> None:
            await self._client.aclose()
            await self._lifespan.__aexit__(None, None, None)

    return _Running


def cert_header(pki: Pki, which: str = "partner") -> dict[str, str]:
    return {CERT_HEADER: quote(getattr(pki, which).cert_pem)}


def security_xml(*assertions: etree._Element) -> str:
    inner = "".join(etree.tostring(a).decode() for a in assertions)
    return f'<wsse:Security xmlns:wsse="{WSSE}" env:mustUnderstand="true">{inner}</wsse:Security>'


def good_assertion(pki: Pki, nhs: str = JANE, **kwargs: Any) -> etree._Element:
    return sign(build_assertion(attributes=default_attributes(nhs), **kwargs), pki.issuer)


async def send(
    client: httpx.AsyncClient,
    path: str,
    action: str,
    body: str,
    *,
    assertions: tuple[etree._Element, ...] = (),
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    data = soap_envelope(
        action, body, extra_headers=security_xml(*assertions) if assertions else ""
    )
    return await client.post(
        path,
        content=data,
        headers={"content-type": "application/soap+xml; charset=UTF-8", **(headers or {})},
    )


def fault(resp: httpx.Response) -> tuple[str, str, str]:
    root = etree.fromstring(resp.content)
    f = root.find(f".//{{{SOAP12}}}Fault")
    assert f is not None, resp.text
    code = f.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value") or ""
    sub = f.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Subcode/{{{SOAP12}}}Value") or ""
    reason = f.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or ""
    return code, sub, reason


@pytest.fixture
def arr(pki: Pki) -> Iterator[SyslogSink]:
    sink = SyslogSink(
        cert_file=str(pki.server.cert_file),
        key_file=str(pki.server.key_file),
        client_ca_file=str(pki.ca.cert_file),
    ).start()
    yield sink
    sink.stop()


def arr_settings(pki: Pki, sink: SyslogSink) -> dict[str, Any]:
    return {
        "arr_host": "127.0.0.1",
        "arr_port": sink.port,
        "arr_ca_file": str(pki.ca.cert_file),
        "arr_cert_file": str(pki.partner.cert_file),
        "arr_key_file": str(pki.partner.key_file),
    }


def rate_limited_partner(base_dir: Path) -> Partner:
    """Partner "epic" with a burst of 3 requests and of 1 ITI-39, refilling at 1 per 100 s: nothing
    refills during a test, so no timing is involved."""
    registry = PartnerRegistry.from_mapping(
        {
            "partners": [
                {
                    "id": "epic",
                    "rate_limit": {"per_second": 0.01, "burst": 3},
                    "transaction_rate_limits": {"ITI-39": {"per_second": 0.01, "burst": 1}},
                }
            ]
        },
        base_dir=base_dir,
    )
    partner = registry.get("epic")
    assert partner is not None
    return partner
