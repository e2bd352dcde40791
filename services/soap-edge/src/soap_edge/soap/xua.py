"""Reads XUA (IHE ITI-40) SAML attributes from wsse:Security for the downstream RequestContext.

Only reads: signature, issuer, validity and audience checks belong to the security layer (issue #9).
Nothing read here is trusted for access decisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from soap_edge.soap.envelope import Envelope
from soap_edge.soap.ns import SAML2, WSSE, q
from soap_edge.soap.parsing import parse_fragment

# ihe-xca-rules §10.1 attribute names, with the spellings seen in real captures.
SUBJECT_ID = (
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
    "urn:oasis:names:tc:xacml:1.0:subject:subject-id",
)
ORGANIZATION = ("urn:oasis:names:tc:xspa:1.0:subject:organization",)
ORGANIZATION_ID = ("urn:oasis:names:tc:xspa:1.0:subject:organization-id",)
ROLE = ("urn:oasis:names:tc:xacml:2.0:subject:role", "urn:oasis:names:tc:xspa:1.0:subject:role")
# Both capitalisations occur in the samples (purposeofuse and purposeOfUse).
PURPOSE_OF_USE = (
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeOfUse",
)
# US partners (eHealth Exchange / Carequality) use the NHIN name.
HOME_COMMUNITY_ID = ("urn:ihe:iti:xca:2010:homeCommunityId", "urn:nhin:names:saml:homeCommunityId")
RESOURCE_ID = (
    "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
    "urn:oasis:names:tc:xacml:1.0:resource:resource-id",
)

# An attribute written as escaped XML text (NHN captures): pull `name="value"` pairs out of it.
_ATTR_PAIR = re.compile(r'\b(code|displayName|root|extension)\s*=\s*"([^"]*)"')


@dataclass
class XuaAttributes:
    """What the assertion says about the requester (unverified)."""

    subject_id: str = ""
    organization: str = ""
    organization_id: str = ""
    role: str = ""
    purpose_of_use: str = ""
    home_community_id: str = ""
    resource_id: str = ""
    present: bool = False


def read_xua(env: Envelope) -> XuaAttributes:
    """Attributes of the first saml2:Assertion in wsse:Security; empty when there is none."""
    out = XuaAttributes()
    security = next((b for b in env.header_blocks() if b.tag == q(WSSE, "Security")), None)
    if security is None:
        return out
    assertion = security.find(q(SAML2, "Assertion"))
    if assertion is None:
        return out
    out.present = True
    for attr in assertion.iterfind(f"{q(SAML2, 'AttributeStatement')}/{q(SAML2, 'Attribute')}"):
        name = attr.get("Name", "")
        value = attr.find(q(SAML2, "AttributeValue"))
        if value is None:
            continue
        if name in SUBJECT_ID and not out.subject_id:
            out.subject_id = _text(value)
        elif name in ORGANIZATION:
            out.organization = _text(value)
        elif name in ORGANIZATION_ID:
            out.organization_id = _identifier(value)
        elif name in ROLE and not out.role:
            out.role = _coded(value)
        elif name in PURPOSE_OF_USE:
            out.purpose_of_use = _coded(value)
        elif name in HOME_COMMUNITY_ID:
            out.home_community_id = normalise_hcid(_text(value))
        elif name in RESOURCE_ID:
            out.resource_id = _text(value)
    return out


def normalise_hcid(value: str) -> str:
    """homeCommunityId in `urn:oid:` form (some assertions carry the bare OID)."""
    value = value.strip()
    if not value:
        return ""
    return value if value.lower().startswith("urn:") else f"urn:oid:{value}"


def _text(value: etree._Element) -> str:
    return " ".join("".join(value.itertext()).split())[:256]


def _pairs(value: etree._Element) -> dict[str, str]:
    """Attributes of an hl7 CE/II child element, or of one written as escaped XML text."""
    child = next((c for c in value if isinstance(c.tag, str)), None)
    if child is not None:
        return {k: v for k, v in child.attrib.items() if isinstance(k, str)}
    text = (value.text or "").strip()
    if text.startswith("<"):
        parsed = parse_fragment(text.encode("utf-8"))
        if parsed is not None:
            return dict(parsed.attrib)
        return dict(_ATTR_PAIR.findall(text))
    return {}


def _coded(value: etree._Element) -> str:
    pairs = _pairs(value)
    return pairs.get("code", "") or _text(value)


def _identifier(value: etree._Element) -> str:
    pairs = _pairs(value)
    if "root" in pairs:
        root = pairs["root"]
        return f"{root}^{pairs['extension']}" if pairs.get("extension") else root
    return _text(value)
