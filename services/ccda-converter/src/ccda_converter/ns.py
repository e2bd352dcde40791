"""Every XML namespace the converter reads or writes, in one map (CDA R2: HL7 v3 namespace)."""

from __future__ import annotations

from typing import Final

V3: Final = "urn:hl7-org:v3"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
SDTC: Final = "urn:hl7-org:sdtc"

# CDA R2 documents use v3 as the default namespace; xsi is needed for @xsi:type on values.
NSMAP: Final[dict[str | None, str]] = {None: V3, "xsi": XSI, "sdtc": SDTC}
# Prototype fragments declare only the default namespace: every declaration a copied fragment
# carries is looked up and stripped again when it is appended to the document (xsi is declared
# where an @xsi:type needs it).
PROTO_NSMAP: Final[dict[str | None, str]] = {None: V3}
# For XPath/find on parsed CCDs (no default namespace in XPath).
XPATH_NS: Final[dict[str, str]] = {"cda": V3, "xsi": XSI, "sdtc": SDTC}

XSI_TYPE: Final = f"{{{XSI}}}type"
V3_PREFIX: Final = f"{{{V3}}}"


def v3(local: str) -> str:
    """Clark name of a CDA element, e.g. ``v3("section")``."""
    return V3_PREFIX + local
