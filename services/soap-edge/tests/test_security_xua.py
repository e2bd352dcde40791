"""XUA (ITI-40) verification: signed assertions built here, every negative a specific error."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, SignatureMethod
from soap_edge_security_kit import (
    AUDIENCE,
    DS,
    HCID_IHE,
    HCID_NHIN,
    HOLDER_OF_KEY,
    NOW,
    ORGANIZATION_ID,
    PARTNER_HCID,
    PURPOSE,
    SAML2,
    SOAP12,
    SUBJECT_ID,
    WSA,
    Pki,
    build_assertion,
    default_attributes,
    envelope,
    security_header,
    sign,
)

from soap_edge.security import errors
from soap_edge.security.partners import PartnerRegistry
from soap_edge.security.xua import XuaPolicy, XuaVerifier, check_resource_id
from xcagw_common.testing import shared_dir


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def registry(pki: Pki, **saml: Any) -> PartnerRegistry:
    return PartnerRegistry.from_mapping(
        {
            "partners": [
                {
                    "id": "epic",
                    "client_certificates": [{"subject": "CN=partner-gw,O=xcagw tests"}],
                    "home_community_ids": [PARTNER_HCID],
                    "saml": {"issuer_certificates": [pki.issuer.cert_pem], **saml},
                }
            ]
        },
        base_dir=Path("."),
    )


def verifier(clock: dt.datetime = NOW, **policy: Any) -> XuaVerifier:
    values: dict[str, Any] = {"audiences": frozenset({AUDIENCE}), **policy}
    return XuaVerifier(XuaPolicy(**values), clock=lambda: clock)


def verify(pki: Pki, env: etree._Element, *, clock: dt.datetime = NOW, **saml: Any) -> Any:
    partner = registry(pki, **saml).get("epic")
    assert partner is not None
    return verifier(clock).verify(env, partner)


def signed(pki: Pki, **kwargs: Any) -> etree._Element:
    return sign(build_assertion(**kwargs), pki.issuer)


# ---- the good path ------------------------------------------------------------------------------
def test_valid_assertion_gives_the_verified_identity(pki: Pki) -> None:
    identity = verify(pki, envelope(signed(pki)))
    assert identity.subject_id == "CONE, Stephen"
    assert identity.organization == "UCLH - University College London Hospitals - TST"
    assert identity.organization_id == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
    assert identity.role_code == "224608005"
    assert identity.role.code_system == "2.16.840.1.113883.6.96"
    assert identity.purpose_of_use == "TREATMENT"
    assert identity.home_community_id == PARTNER_HCID
    assert identity.resource_id.startswith("9000000009^^^")
    assert identity.name_id == "user-42@partner.example"
    assert identity.issuer == "https://idp.partner.example"


def test_nhin_home_community_attribute_name_is_read(pki: Pki) -> None:
    attrs = default_attributes()
    attrs[HCID_NHIN] = attrs.pop(HCID_IHE)
    identity = verify(pki, envelope(signed(pki, attributes=attrs)))
    assert identity.home_community_id == PARTNER_HCID


def test_escaped_ce_and_ii_values_as_in_nhn_captures_are_read(pki: Pki) -> None:
    attrs = default_attributes()
    attrs["urn:oasis:names:tc:xspa:1.0:subject:purposeOfUse"] = [
        '<PurposeOfUse xmlns="urn:hl7-org:v3" xsi:type="CE" code="TREAT" '
        'codeSystem="urn:oid:2.16.840.1.113883.1.11.20448" displayName="Treatment"/>'
    ]
    del attrs[PURPOSE]
    attrs[ORGANIZATION_ID] = [
        '<id xmlns="urn:hl7-org:v3" xsi:type="II" extension="960510542" '
        'root="urn:oid:2.16.578.1.12.4.1.4.101"/>'
    ]
    identity = verify(pki, envelope(signed(pki, attributes=attrs)))
    assert identity.purpose_of_use == "TREAT"
    assert identity.organization_id == "urn:oid:2.16.578.1.12.4.1.4.101^960510542"


def test_ecdsa_signature_is_accepted(pki: Pki, tmp_path: Path) -> None:
    from soap_edge_security_kit import make_cert

    ec_issuer = make_cert("ec issuer", ecdsa=True)
    partner = PartnerRegistry.from_mapping(
        {"partners": [{"id": "ec", "saml": {"issuer_certificates": [ec_issuer.cert_pem]}}]},
        base_dir=tmp_path,
    ).get("ec")
    assert partner is not None
    attrs = default_attributes()
    env = envelope(
        sign(
            build_assertion(attributes=attrs),
            ec_issuer,
            signature_method=SignatureMethod.ECDSA_SHA256,
        )
    )
    assert verifier().verify(env, partner) is not None


def test_clock_skew_tolerates_a_just_expired_assertion(pki: Pki) -> None:
    env = envelope(signed(pki, not_on_or_after=NOW - dt.timedelta(seconds=30)))
    assert verify(pki, env) is not None  # default skew 60 s


def test_no_assertion_is_allowed_when_the_partner_does_not_require_one(pki: Pki) -> None:
    assert verify(pki, envelope(), required=False) is None


def test_assertion_is_still_verified_when_optional(pki: Pki) -> None:
    env = envelope(signed(pki, not_on_or_after=NOW - dt.timedelta(hours=1)))
    with pytest.raises(errors.AssertionExpired):
        verify(pki, env, required=False)


def test_holder_of_key_binds_the_assertion_to_the_tls_client_cert(pki: Pki) -> None:
    env = envelope(signed(pki, confirmation=HOLDER_OF_KEY, hok_cert=pki.partner.cert))
    partner = registry(pki, subject_confirmation_methods=["holder-of-key"]).get("epic")
    assert partner is not None
    identity = verifier().verify(env, partner, client_certificate=pki.partner.cert)
    assert identity is not None and identity.subject_confirmation == HOLDER_OF_KEY
    with pytest.raises(errors.SubjectConfirmationFailed):
        verifier().verify(env, partner, client_certificate=pki.stranger.cert)


# ---- negatives: one specific error each ---------------------------------------------------------
def test_missing_assertion(pki: Pki) -> None:
    with pytest.raises(errors.MissingAssertion):
        verify(pki, envelope())
    with pytest.raises(errors.MissingAssertion):
        verify(pki, envelope(with_security=False))


def test_unsigned(pki: Pki) -> None:
    assertion = build_assertion()
    placeholder = assertion.find(f"{{{DS}}}Signature")
    assertion.remove(placeholder)
    with pytest.raises(errors.UnsignedAssertion) as exc:
        verify(pki, envelope(assertion))
    assert exc.value.subcode == errors.INVALID_SECURITY


def test_tampered_attribute_breaks_the_digest(pki: Pki) -> None:
    env = envelope(signed(pki))
    value = env.find(f".//{{{SAML2}}}Attribute[@Name='{SUBJECT_ID}']/{{{SAML2}}}AttributeValue")
    value.text = "Evil, Mallory"
    with pytest.raises(errors.InvalidSignature):
        verify(pki, env)


def test_wrapping_original_moved_elsewhere_evil_in_place(pki: Pki) -> None:
    """Classic XSW: the signed original hides in another header, a forged one takes its place."""
    original = signed(pki)
    evil = copy.deepcopy(original)
    evil.set("ID", "_evil")
    evil.find(f".//{{{SAML2}}}AttributeValue").text = "Evil, Mallory"
    env = envelope(evil)
    reply_to = etree.SubElement(env.find(f"{{{SOAP12}}}Header"), f"{{{WSA}}}ReplyTo")
    params = etree.SubElement(reply_to, f"{{{WSA}}}ReferenceParameters")
    params.append(copy.deepcopy(original))
    with pytest.raises(errors.AssertionCount):
        verify(pki, env)


def test_wrapping_reference_to_another_element_is_refused(pki: Pki) -> None:
    """The forged assertion carries the genuine Signature, whose Reference names another ID."""
    original = signed(pki)
    original_id = original.get("ID")
    evil = build_assertion(assertion_id="_evil")
    evil.remove(evil.find(f"{{{DS}}}Signature"))
    evil.insert(1, copy.deepcopy(original.find(f"{{{DS}}}Signature")))
    env = envelope(evil)
    # The signed content, renamed so it is no longer an Assertion, keeps the original ID.
    decoy = etree.SubElement(env.find(f"{{{SOAP12}}}Header"), "{urn:decoy}Wrapper")
    decoy.set("ID", original_id)
    with pytest.raises(errors.InvalidSignature):
        verify(pki, env)


def test_duplicate_id_elsewhere_is_refused(pki: Pki) -> None:
    env = envelope(signed(pki))
    assertion = security_header(env)[0]
    decoy = etree.SubElement(env.find(f"{{{SOAP12}}}Body"), "{urn:decoy}Copy")
    decoy.set("ID", assertion.get("ID"))
    with pytest.raises(errors.InvalidSignature):
        verify(pki, env)


def test_assertion_outside_the_security_header_is_refused(pki: Pki) -> None:
    env = envelope()
    etree.SubElement(env.find(f"{{{SOAP12}}}Header"), "{urn:x}Other").append(signed(pki))
    with pytest.raises(errors.MalformedSecurityHeader):
        verify(pki, env)


def test_two_assertions(pki: Pki) -> None:
    with pytest.raises(errors.AssertionCount) as exc:
        verify(pki, envelope(signed(pki), signed(pki)))
    assert exc.value.subcode == errors.INVALID_SECURITY


def test_expired(pki: Pki) -> None:
    env = envelope(
        signed(
            pki,
            issue_instant=NOW - dt.timedelta(hours=2),
            not_on_or_after=NOW - dt.timedelta(hours=1),
        )
    )
    with pytest.raises(errors.AssertionExpired) as exc:
        verify(pki, env)
    assert exc.value.subcode == errors.FAILED_AUTHENTICATION


def test_future_not_before(pki: Pki) -> None:
    env = envelope(
        signed(
            pki,
            not_before=NOW + dt.timedelta(minutes=30),
            not_on_or_after=NOW + dt.timedelta(hours=1),
        )
    )
    with pytest.raises(errors.AssertionNotYetValid):
        verify(pki, env)


def test_future_issue_instant(pki: Pki) -> None:
    env = envelope(signed(pki, issue_instant=NOW + dt.timedelta(hours=1)))
    with pytest.raises(errors.AssertionNotYetValid):
        verify(pki, env)


def test_without_not_on_or_after(pki: Pki) -> None:
    env = envelope(signed(pki, conditions=False))
    with pytest.raises(errors.AssertionExpired):
        verify(pki, env)


def test_wrong_audience(pki: Pki) -> None:
    with pytest.raises(errors.AudienceMismatch):
        verify(pki, envelope(signed(pki, audiences=["https://someone-else.example/xca"])))


def test_missing_audience_restriction(pki: Pki) -> None:
    with pytest.raises(errors.AudienceMismatch):
        verify(pki, envelope(signed(pki, audiences=[])))


def test_endpoint_url_counts_as_an_audience(pki: Pki) -> None:
    env = envelope(signed(pki, audiences=["https://gw.example/xca"]))
    partner = registry(pki).get("epic")
    assert partner is not None
    v = XuaVerifier(XuaPolicy(), clock=lambda: NOW)
    assert v.verify(env, partner, endpoint_audiences=["https://gw.example/xca"]) is not None


def test_untrusted_issuer_certificate(pki: Pki) -> None:
    env = envelope(sign(build_assertion(), pki.rogue_issuer))
    with pytest.raises(errors.UntrustedIssuer) as exc:
        verify(pki, env)
    assert exc.value.subcode == errors.FAILED_AUTHENTICATION


def test_untrusted_issuer_without_key_info_fails_the_signature(pki: Pki) -> None:
    env = envelope(sign(build_assertion(), pki.rogue_issuer, embed_cert=False))
    with pytest.raises(errors.InvalidSignature):
        verify(pki, env)


def test_trusted_key_without_key_info_is_accepted(pki: Pki) -> None:
    env = envelope(sign(build_assertion(), pki.issuer, embed_cert=False))
    assert verify(pki, env) is not None


def test_issuer_name_not_in_the_partner_list(pki: Pki) -> None:
    with pytest.raises(errors.UntrustedIssuer):
        verify(pki, envelope(signed(pki)), issuers=["https://idp.other.example"])


def test_missing_purpose_of_use(pki: Pki) -> None:
    attrs = default_attributes()
    del attrs[PURPOSE]
    with pytest.raises(errors.PurposeOfUseNotPermitted) as exc:
        verify(pki, envelope(signed(pki, attributes=attrs)))
    assert exc.value.subcode == errors.FAILED_AUTHENTICATION


def test_purpose_of_use_not_permitted(pki: Pki) -> None:
    from soap_edge_security_kit import _ce

    attrs = default_attributes()
    attrs[PURPOSE] = [_ce("PurposeOfUse", "OPERATIONS", "2.16.840.1.113883.3.18.7.1", "Ops")]
    with pytest.raises(errors.PurposeOfUseNotPermitted):
        verify(pki, envelope(signed(pki, attributes=attrs)))


def test_missing_subject_id(pki: Pki) -> None:
    attrs = default_attributes()
    del attrs[SUBJECT_ID]
    with pytest.raises(errors.MissingAttribute) as exc:
        verify(pki, envelope(signed(pki, attributes=attrs)))
    assert "subject-id" in exc.value.partner_reason


def test_home_community_not_registered_for_the_partner(pki: Pki) -> None:
    attrs = default_attributes()
    attrs[HCID_IHE] = ["urn:oid:1.2.3.4.5"]
    with pytest.raises(errors.HomeCommunityMismatch):
        verify(pki, envelope(signed(pki, attributes=attrs)))


def test_sha1_is_refused(pki: Pki) -> None:
    # signxml will not even sign with SHA-1; an old IdP would: rewrite the algorithm URIs.
    env = envelope(signed(pki))
    sig = security_header(env)[0].find(f"{{{DS}}}Signature")
    sig.find(f".//{{{DS}}}SignatureMethod").set(
        "Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    )
    with pytest.raises(errors.UnsupportedSignatureAlgorithm):
        verify(pki, env)
    env = envelope(signed(pki))
    sig = security_header(env)[0].find(f"{{{DS}}}Signature")
    sig.find(f".//{{{DS}}}DigestMethod").set("Algorithm", "http://www.w3.org/2000/09/xmldsig#sha1")
    with pytest.raises(errors.UnsupportedSignatureAlgorithm):
        verify(pki, env)


def test_inclusive_c14n_is_refused(pki: Pki) -> None:
    env = envelope(
        sign(build_assertion(), pki.issuer, c14n=CanonicalizationMethod.CANONICAL_XML_1_1)
    )
    with pytest.raises(errors.UnsupportedSignatureAlgorithm):
        verify(pki, env)


def test_resource_id_must_name_the_requested_patient(pki: Pki) -> None:
    partner = registry(pki).get("epic")
    assert partner is not None
    identity = verify(pki, envelope(signed(pki)))
    check_resource_id(identity, partner, ["9000000009"])
    check_resource_id(identity, partner, [])  # a demographics query names no patient
    with pytest.raises(errors.ResourceIdMismatch):
        check_resource_id(identity, partner, ["9000000017"])


def test_verifier_reads_only_the_signed_element(pki: Pki) -> None:
    """Text appended after verification input is parsed is not part of the identity."""
    env = envelope(signed(pki))
    assertion = security_header(env)[0]
    # An unsigned extra attribute statement would break the digest: prove it is not silently
    # ignored but refused.
    etree.SubElement(assertion, f"{{{SAML2}}}AttributeStatement")
    with pytest.raises(errors.InvalidSignature):
        verify(pki, env)


# ---- a real test assertion (NHN, ../shared) ---------------------------------------------------
def _nhn_envelope() -> etree._Element:
    sample = shared_dir() / "conformance/samples/iti38/nhn-iti38-iti40-request-kj.soap.xml"
    if not sample.exists():
        pytest.skip(f"reference kit not found at {sample}")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(sample.read_bytes(), parser)


def _nhn_partner(issuer_pem: str) -> Any:
    partner = PartnerRegistry.from_mapping(
        {
            "partners": [
                {
                    "id": "nhn",
                    "home_community_ids": ["2.16.578.1.12.4.1.7.1.1"],
                    "saml": {
                        "issuer_certificates": [issuer_pem],
                        "audiences": ["nhn:dokumentdeling-saml"],
                        "purposes_of_use": ["TREAT"],
                    },
                }
            ]
        },
        base_dir=Path("."),
    ).get("nhn")
    assert partner is not None
    return partner


def test_real_nhn_capture_is_refused_because_it_was_reformatted_after_signing() -> None:
    """The stored capture is pretty-printed: its SignedInfo no longer matches the signature."""
    env = _nhn_envelope()
    cert_b64 = env.findtext(f".//{{{DS}}}X509Certificate")
    pem = f"-----BEGIN CERTIFICATE-----\n{''.join(cert_b64.split())}\n-----END CERTIFICATE-----"
    at = dt.datetime(2025, 7, 31, 19, 0, tzinfo=dt.UTC)
    with pytest.raises(errors.InvalidSignature):
        XuaVerifier(XuaPolicy(), clock=lambda: at).verify(env, _nhn_partner(pem))


def test_real_nhn_attributes_are_read_once_signed_by_a_trusted_issuer(pki: Pki) -> None:
    env = _nhn_envelope()
    assertion = env.find(f".//{{{SAML2}}}Assertion")
    old = assertion.find(f"{{{DS}}}Signature")
    placeholder = etree.Element(f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    assertion.replace(old, placeholder)
    resigned = sign(assertion, pki.issuer)
    assertion.getparent().replace(assertion, resigned)
    env = etree.fromstring(etree.tostring(env))
    at = dt.datetime(2025, 7, 31, 19, 0, tzinfo=dt.UTC)
    partner = _nhn_partner(pki.issuer.cert_pem)
    # Our test issuer certificate is valid from yesterday: judge the assertion's times at its
    # own date, and the certificate's at today's.
    v = XuaVerifier(XuaPolicy(), clock=lambda: at)
    with pytest.raises(errors.UntrustedIssuer):
        v.verify(env, partner)
    v = _AtTimes(assertion_time=at)
    identity = v.verify(env, partner)
    assert identity is not None
    assert identity.subject_id == "KVART GREVLING"
    assert identity.organization == "VOSS HERAD"
    assert identity.organization_id == "urn:oid:2.16.578.1.12.4.1.4.101^960510542"
    assert identity.purpose_of_use == "TREAT"
    assert identity.role_code == "LE"
    assert identity.home_community_id == "urn:oid:2.16.578.1.12.4.1.7.1.1"
    assert identity.npi == "565505933"


class _AtTimes(XuaVerifier):
    """Assertion validity judged at `assertion_time`, certificates at the real time."""

    def __init__(self, assertion_time: dt.datetime) -> None:
        super().__init__(XuaPolicy(), clock=lambda: assertion_time)

    def _verify_signature(
        self, envelope: Any, assertion: Any, partner: Any, now: Any, data: bytes
    ) -> Any:
        return super()._verify_signature(
            envelope, assertion, partner, dt.datetime.now(dt.UTC), data
        )


def test_the_e2e_partner_clients_signed_assertion_verifies(tmp_path: Path) -> None:
    """xcagw_devstack.partner signs like an IdP would: the dev stack could run verified XUA."""
    from soap_edge_security_kit import make_cert

    from xcagw_devstack.partner import Requester, sign_assertion, xua_assertion

    dev_issuer = make_cert("xcagw dev partner")
    element = sign_assertion(
        xua_assertion(Requester(audience=AUDIENCE)),
        dev_issuer.key_pem,
        dev_issuer.cert_pem.encode(),
    )
    partner = PartnerRegistry.from_mapping(
        {"partners": [{"id": "dev", "saml": {"issuer_certificates": [dev_issuer.cert_pem]}}]},
        base_dir=tmp_path,
    ).get("dev")
    assert partner is not None
    identity = XuaVerifier(XuaPolicy(audiences=frozenset({AUDIENCE}))).verify(
        envelope(element), partner
    )
    assert identity is not None and identity.verified
    assert (identity.subject_id, identity.purpose_of_use) == ("Dr Alice Example", "TREATMENT")


# ---- verified-assertion cache (issue #11) ------------------------------------------------------
class CountingVerifier:
    """Counts signxml verifications (the expensive step the cache saves)."""

    calls = 0


@pytest.fixture
def signxml_calls(monkeypatch: pytest.MonkeyPatch) -> type[CountingVerifier]:
    import soap_edge.security.xua as xua_module

    real = xua_module.XMLVerifier

    class Counting(real):  # type: ignore[misc,valid-type]
        def verify(self, *args: Any, **kwargs: Any) -> Any:
            CountingVerifier.calls += 1
            return super().verify(*args, **kwargs)

    CountingVerifier.calls = 0
    monkeypatch.setattr(xua_module, "XMLVerifier", Counting)
    return CountingVerifier


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def caching(clock: Clock, **policy: Any) -> XuaVerifier:
    values: dict[str, Any] = {"cache_seconds": 300.0, **policy}
    return XuaVerifier(XuaPolicy(**values), clock=clock)


def epic(pki: Pki, **saml: Any) -> Any:
    partner = registry(pki, **saml).get("epic")
    assert partner is not None
    return partner


def test_cache_reuses_a_verified_assertion_across_requests(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    assertion = signed(pki)
    partner = epic(pki)
    v = caching(Clock())
    first = v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    # A second request of the session: a new envelope (new MessageID), the same assertion.
    second = v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 1
    assert first == second
    assert second is not None and second.verified and second.subject_id == "CONE, Stephen"


def test_cache_is_off_by_default(pki: Pki, signxml_calls: type[CountingVerifier]) -> None:
    assertion = signed(pki)
    partner = epic(pki)
    v = verifier()
    v.verify(envelope(assertion), partner)
    v.verify(envelope(assertion), partner)
    assert signxml_calls.calls == 2


def test_cache_hit_still_checks_time_audience_and_confirmation(pki: Pki) -> None:
    clock = Clock()
    assertion = signed(pki, confirmation=HOLDER_OF_KEY, hok_cert=pki.partner.cert)
    partner = epic(pki, subject_confirmation_methods=["holder-of-key"])
    v = caching(clock)
    ok = v.verify(
        envelope(assertion),
        partner,
        endpoint_audiences=[AUDIENCE],
        client_certificate=pki.partner.cert,
    )
    assert ok is not None and ok.subject_confirmation == HOLDER_OF_KEY
    # Another endpoint's audience: the cached assertion is not for it.
    with pytest.raises(errors.AudienceMismatch):
        v.verify(
            envelope(assertion),
            partner,
            endpoint_audiences=["https://other.example/xca"],
            client_certificate=pki.partner.cert,
        )
    # Holder-of-key binds to the TLS client certificate of *this* connection.
    with pytest.raises(errors.SubjectConfirmationFailed):
        v.verify(
            envelope(assertion),
            partner,
            endpoint_audiences=[AUDIENCE],
            client_certificate=pki.stranger.cert,
        )
    clock.now = NOW + dt.timedelta(hours=1)
    with pytest.raises(errors.AssertionExpired):
        v.verify(
            envelope(assertion),
            partner,
            endpoint_audiences=[AUDIENCE],
            client_certificate=pki.partner.cert,
        )


def test_cache_entry_does_not_outlive_not_on_or_after(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    clock = Clock()
    assertion = signed(pki, not_on_or_after=NOW + dt.timedelta(seconds=10))
    partner = epic(pki)
    v = caching(clock)
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 1
    # Past NotOnOrAfter but inside the clock skew: accepted as before, by a full verification.
    clock.now = NOW + dt.timedelta(seconds=20)
    assert v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE]) is not None
    assert signxml_calls.calls == 2


def test_cache_entry_does_not_outlive_the_configured_maximum(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    clock = Clock()
    assertion = signed(pki)  # valid 10 minutes
    partner = epic(pki)
    v = caching(clock, cache_seconds=30.0)
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    clock.now = NOW + dt.timedelta(seconds=31)
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 2


def test_failures_are_never_cached(pki: Pki, signxml_calls: type[CountingVerifier]) -> None:
    assertion = signed(pki)
    tampered = copy.deepcopy(assertion)
    issuer = tampered.find(f"{{{SAML2}}}Issuer")
    assert issuer is not None
    issuer.text = "https://evil.example"
    partner = epic(pki)
    v = caching(Clock())
    for _ in range(2):
        with pytest.raises(errors.InvalidSignature):
            v.verify(envelope(tampered), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 2
    # A signature that verifies but fails a later check is not remembered either.
    for _ in range(2):
        with pytest.raises(errors.AudienceMismatch):
            v.verify(envelope(assertion), partner, endpoint_audiences=[])
    assert signxml_calls.calls == 4


def test_one_time_use_assertions_are_never_cached(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    unsigned = build_assertion()
    conditions = unsigned.find(f"{{{SAML2}}}Conditions")
    assert conditions is not None
    etree.SubElement(conditions, f"{{{SAML2}}}OneTimeUse")
    assertion = sign(unsigned, pki.issuer)
    partner = epic(pki)
    v = caching(Clock())
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 2


def test_cache_hit_still_refuses_a_duplicate_id_in_the_envelope(pki: Pki) -> None:
    assertion = signed(pki)
    partner = epic(pki)
    v = caching(Clock())
    v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    decoy = etree.Element("{urn:test}Payload", ID=str(assertion.get("ID")))
    with pytest.raises(errors.InvalidSignature, match="not unique"):
        v.verify(envelope(assertion, body=decoy), partner, endpoint_audiences=[AUDIENCE])


def test_cache_is_per_partner_configuration(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    assertion = signed(pki)
    v = caching(Clock())
    v.verify(envelope(assertion), epic(pki), endpoint_audiences=[AUDIENCE])
    # Same partner id, reloaded configuration: verified again, and its issuer list applies.
    with pytest.raises(errors.UntrustedIssuer):
        v.verify(
            envelope(assertion),
            epic(pki, issuers=["https://other-idp.example"]),
            endpoint_audiences=[AUDIENCE],
        )
    assert signxml_calls.calls == 2


def test_cache_is_a_bounded_lru(pki: Pki, signxml_calls: type[CountingVerifier]) -> None:
    a, b, c = signed(pki), signed(pki), signed(pki)
    partner = epic(pki)
    v = caching(Clock(), cache_entries=2)
    for assertion in (a, b, a, c):  # c evicts b, the least recently used
        v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 3
    v.verify(envelope(a), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 3
    v.verify(envelope(b), partner, endpoint_audiences=[AUDIENCE])
    assert signxml_calls.calls == 4


# ---- instants at the ends of xs:dateTime's range ---------------------------------------------
NEVER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
YEAR_ONE = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def _with_confirmation_data(assertion: etree._Element, not_on_or_after: str) -> etree._Element:
    confirmation = assertion.find(f"{{{SAML2}}}Subject/{{{SAML2}}}SubjectConfirmation")
    assert confirmation is not None
    etree.SubElement(
        confirmation, f"{{{SAML2}}}SubjectConfirmationData", NotOnOrAfter=not_on_or_after
    )
    return assertion


def test_never_expiring_assertion_is_accepted_and_cached_for_the_policy_time(
    pki: Pki, signxml_calls: type[CountingVerifier]
) -> None:
    # 9999-12-31T23:59:59Z is a common "never expires": adding the clock skew to it used to
    # overflow datetime (OverflowError -> Receiver fault, stack trace).
    unsigned = build_assertion(not_on_or_after=NEVER)
    assertion = sign(_with_confirmation_data(unsigned, "9999-12-31T23:59:59Z"), pki.issuer)
    assert verify(pki, envelope(assertion)).not_on_or_after == NEVER
    clock = Clock()
    partner = epic(pki)
    v = caching(clock, cache_seconds=30.0)
    first = v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    second = v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE])
    assert first == second and second is not None and second.not_on_or_after == NEVER
    assert signxml_calls.calls == 2  # one for verify() above, one for the caching verifier
    # The cache entry ends with the policy's 30 s, not with the assertion's year 9999.
    clock.now = NOW + dt.timedelta(seconds=31)
    assert v.verify(envelope(assertion), partner, endpoint_audiences=[AUDIENCE]) is not None
    assert signxml_calls.calls == 3


def test_year_one_instants_are_refused_as_security_errors(pki: Pki) -> None:
    # Subtracting the skew from a year-1 instant used to overflow (an internal error).
    env = envelope(signed(pki, issue_instant=YEAR_ONE, not_before=YEAR_ONE))
    with pytest.raises(errors.AssertionExpired) as exc:
        verify(pki, env)
    assert exc.value.subcode == errors.FAILED_AUTHENTICATION
    # A year-1 bound on an otherwise current assertion: NotBefore passed long ago (accepted),
    # a SubjectConfirmationData that ended in year 1 is no confirmation.
    assert verify(pki, envelope(signed(pki, not_before=YEAR_ONE))) is not None
    expired_confirmation = sign(
        _with_confirmation_data(build_assertion(), "0001-01-01T00:00:00Z"), pki.issuer
    )
    with pytest.raises(errors.SubjectConfirmationFailed):
        verify(pki, envelope(expired_confirmation))


def test_times_at_the_clock_skew_boundaries_are_unchanged(pki: Pki) -> None:
    skew = dt.timedelta(seconds=60)
    partner = epic(pki)
    v = verifier()
    # NotOnOrAfter exactly `skew` ago: expired; a second later: accepted.
    with pytest.raises(errors.AssertionExpired):
        v.verify(envelope(signed(pki, not_on_or_after=NOW - skew)), partner)
    ok = signed(pki, not_on_or_after=NOW - skew + dt.timedelta(seconds=1))
    assert v.verify(envelope(ok), partner) is not None
    # IssueInstant and NotBefore exactly `skew` ahead: accepted; a second more: not yet valid.
    ahead = NOW + skew
    assert v.verify(envelope(signed(pki, issue_instant=ahead, not_before=ahead)), partner)
    later = ahead + dt.timedelta(seconds=1)
    with pytest.raises(errors.AssertionNotYetValid):
        v.verify(envelope(signed(pki, issue_instant=later, not_before=NOW)), partner)
    with pytest.raises(errors.AssertionNotYetValid):
        v.verify(envelope(signed(pki, not_before=later)), partner)


def test_escaped_ce_with_a_doctype_or_entity_is_not_expanded(pki: Pki) -> None:
    # Escaped CE text goes through soap.parsing's hardened parser: no DTD, no entities.
    attrs = default_attributes()
    del attrs[PURPOSE]
    attrs["urn:oasis:names:tc:xspa:1.0:subject:purposeOfUse"] = [
        '<!DOCTYPE x [<!ENTITY e "TREATMENT">]>'
        '<PurposeOfUse xmlns="urn:hl7-org:v3" code="&e;" codeSystem="2.16.840.1.113883.3.18.7.1"/>'
    ]
    with pytest.raises(errors.PurposeOfUseNotPermitted):
        verify(pki, envelope(signed(pki, attributes=attrs)))
