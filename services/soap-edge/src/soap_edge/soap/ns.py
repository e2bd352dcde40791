"""Every XML namespace soap-edge reads or writes, in one map (ITI TF-2x App. V, ebRS, HL7v3)."""

from __future__ import annotations

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
XML = "http://www.w3.org/XML/1998/namespace"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
WSAM = "http://www.w3.org/2007/05/addressing/metadata"

# Prefixes used when we serialise; receivers must not depend on them, but stable prefixes make
# captured messages easy to diff.
PREFIXES: dict[str, str] = {
    "env": SOAP12,
    "wsa": WSA,
    "xop": XOP,
    "query": QUERY,
    "rim": RIM,
    "rs": RS,
    "xdsb": XDSB,
    "xsi": XSI,
}


def q(namespace: str, local: str) -> str:
    """Clark notation `{namespace}local` as lxml expects it."""
    return f"{{{namespace}}}{local}"
