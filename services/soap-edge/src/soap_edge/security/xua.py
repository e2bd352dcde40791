"""XUA (IHE ITI-40): verify the SAML 2.0 assertion in wsse:Security and read who is asking.

Checks in the order of ihe-xca-rules §10.1, each failure a specific `SecurityError`:

1. Exactly one `wsse:Security` header and exactly one `saml2:Assertion` in the whole envelope,
   as a direct child of that header (a second copy anywhere is how signature-wrapping attacks
   start, so it is refused outright).
2. The assertion carries exactly one enveloped `ds:Signature` whose SignedInfo has exactly one
   Reference, `URI="#<the assertion's ID>"`, and that ID is unique in the whole envelope.
   Algorithms are allow-listed (exclusive c14n; enveloped-signature and exclusive c14n
   transforms; RSA/ECDSA with SHA-256 or stronger).
3. The signature is verified with signxml against the partner's pinned issuer certificates, on a
   serialised copy of the assertion alone (exclusive c14n makes the context irrelevant).
   **Everything after this point is read from signxml's `signed_xml`**, the element that was
   actually digested, never from the original tree: what was verified is what is used.
4. Conditions NotBefore / NotOnOrAfter (and IssueInstant) with a configurable clock skew;
   every AudienceRestriction must name one of our audiences (SAML Core §2.5.1.4).
5. SubjectConfirmation: bearer or holder-of-key as the partner agreement says; holder-of-key
   binds the assertion to the TLS client certificate.
6. Attributes: subject-id, organisation, organisation id, role, purpose of use (permitted set,
   TREATMENT by default), homeCommunityId (IHE and NHIN names), resource-id, NPI.

Verified-assertion cache (`XuaPolicy.cache_seconds`, issue #11). Under IHE XUA (ITI TF-2b
3.40, ITI-40) the X-Service User conveys the identity assertion its identity provider issued in
the WS-Security header of each transaction, and an XCA initiating gateway reuses it for the
requests of a user's session until it expires; neither XUA nor ihe-xca-rules §10.1 asks for
one-time use. Steps 2, 3 and 6 - the signature and everything read from the signed element
alone - are a pure function of the assertion's exact bytes and the partner's pinned
configuration, so a *successful* result is kept, keyed by SHA-256 of those bytes (the serialised
assertion signxml is given) and held for that `Partner` object only, for no longer than
`cache_seconds`, the assertion's Conditions/@NotOnOrAfter (SAML 2.0 Core §2.5.1.2) and the
pinned certificate's validity. On a hit everything that depends on the request or the clock is
checked again: step 1, the envelope-wide ID uniqueness, step 4 (times; the audiences of this
endpoint) and step 5 (subject confirmation against this TLS client certificate). Failures are
never cached; an assertion with a OneTimeUse condition is never cached (SAML 2.0 Core §2.5.1.5:
its issuer wants fresh information for each use, not an assertion the relying party retains).
soap-edge has no assertion replay detection, so a hit accepts exactly what a fresh verification
would. Bounded LRU (`cache_entries`).
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidInput
from signxml.exceptions import InvalidSignature as SignxmlInvalidSignature
from signxml.verifier import SignatureConfiguration, XMLVerifier

from soap_edge.security.errors import (
    AssertionCount,
    AssertionExpired,
    AssertionNotYetValid,
    AudienceMismatch,
    HomeCommunityMismatch,
    InvalidSignature,
    MalformedSecurityHeader,
    MissingAssertion,
    MissingAttribute,
    PurposeOfUseNotPermitted,
    ResourceIdMismatch,
    SubjectConfirmationFailed,
    UnsignedAssertion,
    UnsupportedSignatureAlgorithm,
    UntrustedIssuer,
)
from soap_edge.security.partners import HOLDER_OF_KEY, Partner, fingerprint, normalise_hcid
from soap_edge.soap.parsing import hardened_parser, parse_fragment

# Namespaces (one map for the security package).
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
HL7 = "urn:hl7-org:v3"

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ALLOWED_TRANSFORMS = frozenset({ENVELOPED, EXC_C14N})
ALLOWED_SIGNATURE_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
ALLOWED_DIGESTS = frozenset(
    {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
)

# ITI-40 attribute names (ihe-xca-rules §10.1) by the short names partner policies use, in order
# of preference; the alternatives are spellings seen in real captures (NHN, eHealth Exchange).
ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "subject-id": (
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
        "urn:oasis:names:tc:xacml:1.0:subject:subject-id",
    ),
    "organization": ("urn:oasis:names:tc:xspa:1.0:subject:organization",),
    "organization-id": ("urn:oasis:names:tc:xspa:1.0:subject:organization-id",),
    "role": (
        "urn:oasis:names:tc:xacml:2.0:subject:role",
        "urn:oasis:names:tc:xspa:1.0:subject:role",
    ),
    "purpose-of-use": (
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        "urn:oasis:names:tc:xspa:1.0:subject:purposeOfUse",
        "urn:oasis:names:tc:xacml:2.0:action:purpose",
    ),
    # US partners (eHealth Exchange / Carequality) use the NHIN name.
    "home-community-id": (
        "urn:ihe:iti:xca:2010:homeCommunityId",
        "urn:nhin:names:saml:homeCommunityId",
    ),
    "resource-id": (
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
        "urn:oasis:names:tc:xacml:1.0:resource:resource-id",
    ),
    "npi": (
        "urn:oasis:names:tc:xspa:1.0:subject:npi",
        "urn:oasis:names:tc:xspa:2.0:subject:npi",
    ),
}

# A CE/II written as escaped XML text (NHN captures) often lacks the xsi declaration, so it is
# not well-formed XML: read its `name="value"` pairs instead.
_ATTR_PAIR = re.compile(
    r'\b(code|codeSystem|codeSystemName|displayName|root|extension)\s*=\s*"([^"]{0,512})"'
)
_MAX_VALUE_CHARS = 512
_MAX_FRACTION = re.compile(r"(\.\d{6})\d+")


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


@dataclass(frozen=True)
class Coded:
    """An HL7 CE value (role, purpose of use)."""

    code: str
    code_system: str = ""
    code_system_name: str = ""
    display_name: str = ""


@dataclass(frozen=True)
class XuaIdentity:
    """The verified requester. Every field comes from the signed assertion."""

    assertion_id: str
    issuer: str
    name_id: str
    subject_id: str
    organization: str
    organization_id: str
    role: Coded | None
    purposes_of_use: tuple[Coded, ...]
    home_community_id: str
    resource_id: str
    npi: str
    not_on_or_after: datetime
    subject_confirmation: str
    issuer_certificate_sha256: str
    # False only for development partners with `saml.verify: false` (nothing was checked).
    verified: bool = True

    @property
    def purpose_of_use(self) -> str:
        return self.purposes_of_use[0].code if self.purposes_of_use else ""

    @property
    def role_code(self) -> str:
        return self.role.code if self.role else ""


@dataclass(frozen=True)
class XuaPolicy:
    """Gateway-wide XUA settings; partner specifics come from the registry."""

    audiences: frozenset[str] = field(default_factory=frozenset)
    clock_skew: timedelta = timedelta(seconds=60)
    required: bool = True
    max_assertion_bytes: int = 64 * 1024
    # Verified-assertion cache (module docstring): 0 disables it.
    cache_seconds: float = 0.0
    cache_entries: int = 1024


Clock = Callable[[], datetime]

_ASSERTION = f"{{{SAML2}}}Assertion"
_ENCRYPTED_ASSERTION = f"{{{SAML2}}}EncryptedAssertion"

# SAML Core §5.4.2 / XML-DSig: the element a same-document Reference names is the one whose
# ID-typed attribute has that value; any attribute named ID/Id/id counts here.
# The value test comes first: it rules out almost every attribute before the (costlier)
# local-name() tests, half the cost of the reverse order on a cached request.
_SAME_ID = etree.XPath(
    "count(descendant-or-self::*"
    "[@*[.=$id][local-name()='ID' or local-name()='Id' or local-name()='id']])"
)


@dataclass(frozen=True)
class _Verified:
    """What a successful verification established from the assertion bytes alone."""

    partner: Partner
    # Only the request- and clock-dependent parts of the signed element (IssueInstant,
    # Conditions, Subject), re-checked on every hit; the rest is summed up in `identity`.
    checks: etree._Element
    identity: XuaIdentity
    certificate_not_before: datetime
    expires: datetime


class _VerifiedCache:
    """Bounded LRU of successful verifications (asyncio: one thread, no lock needed)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()

    def get(self, key: bytes, partner: Partner, now: datetime) -> _Verified | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.partner is not partner or not entry.certificate_not_before <= now < entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: _Verified) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class XuaVerifier:
    """Verifies one request's assertion for a known partner (stateless, safe to share)."""

    def __init__(self, policy: XuaPolicy, *, clock: Clock = _utcnow) -> None:
        self.policy = policy
        self._clock = clock
        self._cache = (
            _VerifiedCache(policy.cache_entries)
            if policy.cache_seconds > 0 and policy.cache_entries > 0
            else None
        )
        # signxml logs every canonicalised assertion at DEBUG: that is the requester's identity
        # and the patient's resource-id, which must never reach a log.
        logging.getLogger("signxml").setLevel(logging.WARNING)

    def verify(
        self,
        envelope: etree._Element,
        partner: Partner,
        *,
        endpoint_audiences: Iterable[str] = (),
        client_certificate: x509.Certificate | None = None,
    ) -> XuaIdentity | None:
        """The verified identity; None when there is no assertion and none is required."""
        required = self.policy.required and partner.saml.required
        assertion = self._locate(envelope, required)
        if assertion is None:
            return None
        if not partner.saml.verify:
            return self._unverified(assertion)
        now = self._clock()
        audiences = set(self.policy.audiences) | set(partner.saml.audiences)
        audiences |= {a for a in endpoint_audiences if a}
        data = etree.tostring(assertion)
        key = hashlib.sha256(data).digest() if self._cache is not None else b""
        hit = self._cache.get(key, partner, now) if self._cache is not None else None
        if hit is not None:
            # Same bytes, same partner: the signature, issuer and attributes are as verified;
            # what depends on this envelope, this endpoint, this client and now is checked again.
            self._check_unique_id(envelope, hit.identity.assertion_id)
            self._check_times(hit.checks, now)
            self._check_audience(hit.checks, audiences)
            confirmation = self._check_subject_confirmation(
                hit.checks, partner, client_certificate, now
            )
            if confirmation == hit.identity.subject_confirmation:
                return hit.identity
            return replace(hit.identity, subject_confirmation=confirmation)
        signed, issuer_fp, cert = self._verify_signature(envelope, assertion, partner, now, data)
        self._check_times(signed, now)
        self._check_audience(signed, audiences)
        confirmation = self._check_subject_confirmation(signed, partner, client_certificate, now)
        identity = self._identity(signed, partner, confirmation, issuer_fp)
        if self._cache is not None:
            self._remember(key, signed, partner, identity, cert, now)
        return identity

    def _remember(
        self,
        key: bytes,
        signed: etree._Element,
        partner: Partner,
        identity: XuaIdentity,
        cert: x509.Certificate,
        now: datetime,
    ) -> None:
        """Cache a success, bounded by the policy, the assertion's and the certificate's life."""
        assert self._cache is not None  # noqa: S101 - only called with a cache
        conditions = signed.findall(_q(SAML2, "Conditions"))
        if any(c.find(_q(SAML2, "OneTimeUse")) is not None for c in conditions):
            # SAML Core §2.5.1.5: a OneTimeUse assertion is not to be retained for reuse.
            return
        checks = etree.Element(_q(SAML2, "Assertion"), IssueInstant=signed.get("IssueInstant", ""))
        for child in signed:
            if child.tag in (_q(SAML2, "Conditions"), _q(SAML2, "Subject")):
                checks.append(copy.deepcopy(child))
        expires = min(
            now + timedelta(seconds=self.policy.cache_seconds),
            # The time check allows the skew past NotOnOrAfter; the entry does not outlive it.
            identity.not_on_or_after,
            cert.not_valid_after_utc,
        )
        if expires <= now:
            return
        self._cache.put(
            key,
            _Verified(
                partner=partner,
                checks=checks,
                identity=identity,
                certificate_not_before=cert.not_valid_before_utc,
                expires=expires,
            ),
        )

    # ---- 1. Locate exactly one assertion -------------------------------------------------------
    def _locate(self, envelope: etree._Element, required: bool) -> etree._Element | None:
        header = next((c for c in envelope if c.tag == _q(SOAP12, "Header")), None)
        securities = [] if header is None else [c for c in header if c.tag == _q(WSSE, "Security")]
        found = list(envelope.iter(_ASSERTION, _ENCRYPTED_ASSERTION))
        assertions = [a for a in found if a.tag == _ASSERTION]
        if len(assertions) != len(found):
            raise MalformedSecurityHeader("EncryptedAssertion is not supported")
        if len(securities) > 1:
            raise MalformedSecurityHeader("more than one wsse:Security header")
        if not assertions:
            if required:
                raise MissingAssertion("no saml2:Assertion")
            return None
        if len(assertions) > 1:
            raise AssertionCount(f"{len(assertions)} saml2:Assertion elements")
        assertion = assertions[0]
        if not securities or assertion.getparent() is not securities[0]:
            raise MalformedSecurityHeader("saml2:Assertion is not a child of wsse:Security")
        return assertion

    # ---- 2 + 3. Signature ----------------------------------------------------------------------
    def _verify_signature(
        self,
        envelope: etree._Element,
        assertion: etree._Element,
        partner: Partner,
        now: datetime,
        data: bytes,
    ) -> tuple[etree._Element, str, x509.Certificate]:
        """The verified (signed) assertion, its issuer certificate and that one's fingerprint.

        `data` is `etree.tostring(assertion)`: what signxml verifies (and the cache key).
        """
        assertion_id = assertion.get("ID") or ""
        if not assertion_id:
            raise MalformedSecurityHeader("saml2:Assertion without ID")
        signatures = [c for c in assertion if c.tag == _q(DS, "Signature")]
        if not signatures:
            raise UnsignedAssertion("no enveloped ds:Signature")
        if len(signatures) > 1:
            raise InvalidSignature("more than one ds:Signature on the assertion")
        signature = signatures[0]
        self._check_signed_info(signature, assertion_id)
        self._check_unique_id(envelope, assertion_id)
        if len(data) > self.policy.max_assertion_bytes:
            raise MalformedSecurityHeader("assertion too large")
        trusted = partner.issuer_fingerprints()
        if not trusted:
            raise UntrustedIssuer(f"partner {partner.id} has no issuer certificates")
        embedded = self._embedded_certificate(signature)
        if embedded is not None:
            fp = fingerprint(embedded)
            if fp not in trusted:
                raise UntrustedIssuer(f"signing certificate {fp[:16]} is not pinned")
            candidates = [(fp, trusted[fp])]
        else:
            candidates = list(trusted.items())

        config = SignatureConfiguration(
            require_x509=True,
            location="./",
            expect_references=1,
            signature_methods=ALLOWED_SIGNATURE_METHODS,
            digest_algorithms=ALLOWED_DIGESTS,
            # The pinned certificate must be valid at the time we judge the assertion.
            verification_time=now,
        )
        last: Exception | None = None
        for fp, cert in candidates:
            try:
                result = XMLVerifier().verify(
                    data,
                    x509_cert=cert,
                    # The envelope's own hardened options: `data` was serialised from a tree
                    # parsed with them, so re-parsing it with them changes nothing it signed.
                    parser=hardened_parser(),
                    id_attribute="ID",
                    expect_config=config,
                )
            except InvalidCertificate as exc:
                raise UntrustedIssuer(f"pinned issuer certificate not usable: {exc}") from None
            except (SignxmlInvalidSignature, InvalidInput) as exc:
                last = exc
                continue
            except etree.DocumentInvalid as exc:
                raise InvalidSignature(f"ds:Signature is not schema-valid: {exc}") from None
            signed = getattr(result, "signed_xml", None)
            if (
                signed is None
                or signed.tag != _q(SAML2, "Assertion")
                or signed.get("ID") != assertion_id
            ):
                raise InvalidSignature("signed element is not the assertion")
            issuer = (signed.findtext(_q(SAML2, "Issuer")) or "").strip()
            if partner.saml.issuers and issuer not in partner.saml.issuers:
                raise UntrustedIssuer("saml2:Issuer not in the partner's issuer list")
            return signed, fp, cert
        raise InvalidSignature(f"signature verification failed: {type(last).__name__}")

    @staticmethod
    def _check_unique_id(envelope: etree._Element, assertion_id: str) -> None:
        # SAML Core §5.4.2: the Reference must point at the assertion's own ID, and that ID must
        # identify exactly one element, or the digest could cover a different element.
        if _SAME_ID(envelope, id=assertion_id) != 1:
            raise InvalidSignature("assertion ID is not unique in the envelope")

    @staticmethod
    def _check_signed_info(signature: etree._Element, assertion_id: str) -> None:
        signed_info = signature.find(_q(DS, "SignedInfo"))
        if signed_info is None:
            raise InvalidSignature("ds:Signature without SignedInfo")
        c14n = signed_info.find(_q(DS, "CanonicalizationMethod"))
        if c14n is None or c14n.get("Algorithm") != EXC_C14N:
            raise UnsupportedSignatureAlgorithm("SignedInfo c14n is not exclusive c14n")
        method = signed_info.find(_q(DS, "SignatureMethod"))
        allowed_methods = {m.value for m in ALLOWED_SIGNATURE_METHODS}
        if method is None or method.get("Algorithm") not in allowed_methods:
            raise UnsupportedSignatureAlgorithm("signature method not allowed")
        references = signed_info.findall(_q(DS, "Reference"))
        if len(references) != 1:
            raise InvalidSignature(f"{len(references)} References in SignedInfo")
        reference = references[0]
        if reference.get("URI") != f"#{assertion_id}":
            raise InvalidSignature("Reference does not point at the assertion")
        for transform in reference.iterfind(f"{_q(DS, 'Transforms')}/{_q(DS, 'Transform')}"):
            if transform.get("Algorithm") not in ALLOWED_TRANSFORMS:
                raise UnsupportedSignatureAlgorithm("transform not allowed")
        digest = reference.find(_q(DS, "DigestMethod"))
        allowed_digests = {d.value for d in ALLOWED_DIGESTS}
        if digest is None or digest.get("Algorithm") not in allowed_digests:
            raise UnsupportedSignatureAlgorithm("digest method not allowed")

    @staticmethod
    def _embedded_certificate(signature: etree._Element) -> x509.Certificate | None:
        certs = signature.findall(
            f"{_q(DS, 'KeyInfo')}/{_q(DS, 'X509Data')}/{_q(DS, 'X509Certificate')}"
        )
        if not certs:
            return None
        try:
            der = base64.b64decode("".join((certs[0].text or "").split()), validate=True)
            return x509.load_der_x509_certificate(der)
        except ValueError:
            raise InvalidSignature("KeyInfo X509Certificate is not a certificate") from None

    # ---- 4. Validity and audience --------------------------------------------------------------
    def _check_times(self, signed: etree._Element, now: datetime) -> None:
        # The skew is applied to `now`, never to the assertion's instants: those may be any
        # xs:dateTime, and 9999-12-31T23:59:59Z ("never expires") plus the skew, or a year-1
        # instant minus it, is outside datetime's range (OverflowError, an internal error).
        skew = self.policy.clock_skew
        issued = _parse_time(signed.get("IssueInstant"), "IssueInstant")
        if issued > now + skew:
            raise AssertionNotYetValid("IssueInstant in the future")
        conditions = signed.find(_q(SAML2, "Conditions"))
        if conditions is None or not conditions.get("NotOnOrAfter"):
            # XUA assertions are short-lived by design; one without an end is not accepted.
            raise AssertionExpired("no Conditions/@NotOnOrAfter")
        not_on_or_after = _parse_time(conditions.get("NotOnOrAfter"), "NotOnOrAfter")
        if now - skew >= not_on_or_after:
            raise AssertionExpired("NotOnOrAfter passed")
        if conditions.get("NotBefore"):
            not_before = _parse_time(conditions.get("NotBefore"), "NotBefore")
            if now + skew < not_before:
                raise AssertionNotYetValid("NotBefore in the future")

    @staticmethod
    def _check_audience(signed: etree._Element, audiences: set[str]) -> None:
        path = f"{_q(SAML2, 'Conditions')}/{_q(SAML2, 'AudienceRestriction')}"
        restrictions = signed.findall(path)
        if not restrictions:
            raise AudienceMismatch("no AudienceRestriction")
        for restriction in restrictions:
            values = {(a.text or "").strip() for a in restriction.iter(_q(SAML2, "Audience"))}
            if not values & audiences:
                raise AudienceMismatch("AudienceRestriction names another audience")

    # ---- 5. Subject confirmation ---------------------------------------------------------------
    def _check_subject_confirmation(
        self,
        signed: etree._Element,
        partner: Partner,
        client_certificate: x509.Certificate | None,
        now: datetime,
    ) -> str:
        subject = signed.find(_q(SAML2, "Subject"))
        if subject is None:
            raise SubjectConfirmationFailed("no Subject")
        allowed = partner.saml.subject_confirmation_methods
        for confirmation in subject.iterfind(_q(SAML2, "SubjectConfirmation")):
            method = str(confirmation.get("Method", ""))
            if method not in allowed:
                continue
            data = confirmation.find(_q(SAML2, "SubjectConfirmationData"))
            if data is not None and data.get("NotOnOrAfter"):
                limit = _parse_time(data.get("NotOnOrAfter"), "SubjectConfirmationData")
                # Skew on `now`, not on the partner's instant (see _check_times).
                if now - self.policy.clock_skew >= limit:
                    continue
            if method == HOLDER_OF_KEY and not _holds_key(data, client_certificate):
                continue
            return method
        raise SubjectConfirmationFailed("no acceptable SubjectConfirmation")

    @staticmethod
    def _unverified(assertion: etree._Element) -> XuaIdentity:
        """Development partners: the attributes as sent, with no check at all."""
        values = _attribute_values(assertion)

        def text(short: str) -> str:
            found = values.get(short, [])
            return _text(found[0]) if found else ""

        roles = [c for c in (_coded(v) for v in values.get("role", [])) if c is not None]
        purposes = [c for c in (_coded(v) for v in values.get("purpose-of-use", [])) if c]
        org_ids = values.get("organization-id", [])
        return XuaIdentity(
            assertion_id=str(assertion.get("ID", "")),
            issuer=_clip(assertion.findtext(_q(SAML2, "Issuer")) or ""),
            name_id=_clip(
                assertion.findtext(f"{_q(SAML2, 'Subject')}/{_q(SAML2, 'NameID')}") or ""
            ),
            subject_id=text("subject-id"),
            organization=text("organization"),
            organization_id=_identifier(org_ids[0]) if org_ids else "",
            role=roles[0] if roles else None,
            purposes_of_use=tuple(purposes),
            home_community_id=normalise_hcid(text("home-community-id")),
            resource_id=text("resource-id"),
            npi=text("npi"),
            not_on_or_after=datetime.max.replace(tzinfo=UTC),
            subject_confirmation="",
            issuer_certificate_sha256="",
            verified=False,
        )

    # ---- 6. Attributes -------------------------------------------------------------------------
    def _identity(
        self,
        signed: etree._Element,
        partner: Partner,
        confirmation: str,
        issuer_fp: str,
    ) -> XuaIdentity:
        values = _attribute_values(signed)
        policy = partner.saml

        def text(short: str) -> str:
            found = values.get(short, [])
            return _text(found[0]) if found else ""

        roles = [c for c in (_coded(v) for v in values.get("role", [])) if c is not None]
        purposes = [c for c in (_coded(v) for v in values.get("purpose-of-use", [])) if c]
        permitted = set(policy.purposes_of_use)
        if "purpose-of-use" in policy.required_attributes and not purposes:
            raise PurposeOfUseNotPermitted("no purpose of use")
        if any(p.code.upper() not in permitted for p in purposes):
            raise PurposeOfUseNotPermitted("purpose of use not permitted")
        org_ids = values.get("organization-id", [])
        identity = XuaIdentity(
            assertion_id=signed.get("ID", ""),
            issuer=(signed.findtext(_q(SAML2, "Issuer")) or "").strip(),
            name_id=_clip(signed.findtext(f"{_q(SAML2, 'Subject')}/{_q(SAML2, 'NameID')}") or ""),
            subject_id=text("subject-id"),
            organization=text("organization"),
            organization_id=_identifier(org_ids[0]) if org_ids else "",
            role=roles[0] if roles else None,
            purposes_of_use=tuple(purposes),
            home_community_id=normalise_hcid(text("home-community-id")),
            resource_id=text("resource-id"),
            npi=text("npi"),
            not_on_or_after=_parse_time(
                signed.find(_q(SAML2, "Conditions")).get("NotOnOrAfter"), "NotOnOrAfter"
            ),
            subject_confirmation=confirmation,
            issuer_certificate_sha256=issuer_fp,
        )
        present = {
            "subject-id": identity.subject_id,
            "organization": identity.organization,
            "organization-id": identity.organization_id,
            "role": identity.role_code,
            "purpose-of-use": identity.purpose_of_use,
            "home-community-id": identity.home_community_id,
            "resource-id": identity.resource_id,
            "npi": identity.npi,
        }
        for short in policy.required_attributes:
            if not present.get(short):
                raise MissingAttribute(ATTRIBUTE_NAMES[short][0])
        if (
            identity.home_community_id
            and partner.home_community_ids
            and identity.home_community_id not in partner.home_community_ids
        ):
            raise HomeCommunityMismatch("assertion HCID not registered for the partner")
        return identity


def check_resource_id(
    identity: XuaIdentity | None, partner: Partner, patient_ids: Iterable[str]
) -> None:
    """ITI-40 resource-id, when present, must name the patient the request is about.

    `patient_ids` are the id values the request names (e.g. NHS numbers, without assigning
    authority); the resource-id is an HL7 CX (`id^^^&root&ISO`), compared on its id part.
    Requests that name no patient (demographics queries, retrieves) are not checked.
    """
    if identity is None or not identity.resource_id or not partner.saml.check_resource_id:
        return
    wanted = {p.strip() for p in patient_ids if p.strip()}
    if not wanted:
        return
    asserted = identity.resource_id.split("^", 1)[0].strip().strip("'")
    if asserted not in wanted:
        raise ResourceIdMismatch("resource-id names another patient")


# ---- helpers ----------------------------------------------------------------------------------
def _parse_time(value: str | None, what: str) -> datetime:
    if not value:
        raise MalformedSecurityHeader(f"{what} missing")
    try:
        return _instant(value)
    except ValueError:
        raise MalformedSecurityHeader(f"{what} is not an xs:dateTime") from None


# A partner session repeats the same few instants on every request (its assertion's
# IssueInstant, NotBefore, NotOnOrAfter): parsed once each. Failures are not cached.
@functools.lru_cache(maxsize=1024)
def _instant(value: str) -> datetime:
    text = _MAX_FRACTION.sub(r"\1", value.strip())
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    # SAML Core §1.3.3: times are UTC; a value without a zone is read as UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _holds_key(data: etree._Element | None, client: x509.Certificate | None) -> bool:
    """Holder-of-key (SAML HoK profile): the confirmation key is the TLS client certificate."""
    if data is None or client is None:
        return False
    wanted = hashlib.sha256(client.public_bytes(Encoding.DER)).hexdigest()
    for cert in data.iter(_q(DS, "X509Certificate")):
        try:
            der = base64.b64decode("".join((cert.text or "").split()), validate=True)
        except ValueError:
            continue
        if hashlib.sha256(der).hexdigest() == wanted:
            return True
    return False


def _attribute_values(signed: etree._Element) -> dict[str, list[etree._Element]]:
    """AttributeValues by short name; for each short name the first listed spelling wins."""
    by_name: dict[str, list[etree._Element]] = {}
    for attr in signed.iterfind(f"{_q(SAML2, 'AttributeStatement')}/{_q(SAML2, 'Attribute')}"):
        name = attr.get("Name", "")
        values = [
            v for v in attr.iterfind(_q(SAML2, "AttributeValue")) if v.get(_q(XSI, "nil")) != "true"
        ]
        if values:
            by_name.setdefault(name, values)
    out: dict[str, list[etree._Element]] = {}
    for short, names in ATTRIBUTE_NAMES.items():
        for name in names:
            if name in by_name:
                out[short] = by_name[name]
                break
    return out


def _clip(value: str) -> str:
    return " ".join(value.split())[:_MAX_VALUE_CHARS]


def _text(value: etree._Element) -> str:
    return _clip("".join(value.itertext()))


def _pairs(value: etree._Element) -> dict[str, str]:
    """Attributes of an HL7 CE/II child element, or of one written as escaped XML text."""
    child = next((c for c in value if isinstance(c.tag, str)), None)
    if child is not None:
        # ITI-40: the value is an hl7:CE / hl7:II element; anything else is not read.
        if etree.QName(child).namespace != HL7:
            return {}
        return {str(k): str(v) for k, v in child.attrib.items() if "}" not in str(k)}
    text = (value.text or "").strip()
    if text.startswith("<") and len(text) < 4096:
        # The shared hardened parser (no DTD, entities or network; bounded depth).
        parsed = parse_fragment(text.encode("utf-8"))
        if parsed is None:
            return dict(_ATTR_PAIR.findall(text))
        return {str(k): str(v) for k, v in parsed.attrib.items() if "}" not in str(k)}
    return {}


def _coded(value: etree._Element) -> Coded | None:
    """A CE value: an hl7 element, escaped XML text, or (lenient) a bare code as text."""
    text = (value.text or "").strip()
    structured = text.startswith("<") or any(isinstance(c.tag, str) for c in value)
    pairs = _pairs(value) if structured else {}
    code = pairs.get("code", "").strip() if structured else _text(value)
    if not code:
        return None
    return Coded(
        code=_clip(code),
        code_system=_clip(pairs.get("codeSystem", "")),
        code_system_name=_clip(pairs.get("codeSystemName", "")),
        display_name=_clip(pairs.get("displayName", "")),
    )


def _identifier(value: etree._Element) -> str:
    """organization-id: a URI/OID as text, or an HL7 II (root^extension, as soap-edge uses)."""
    pairs = _pairs(value)
    if pairs.get("root"):
        root = pairs["root"]
        return f"{root}^{pairs['extension']}" if pairs.get("extension") else root
    return _text(value)
