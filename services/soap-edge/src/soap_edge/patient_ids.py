"""Patient identifiers: HL7 v2 CX values used in XDS metadata (and the shared NHS number check)."""

from __future__ import annotations

from dataclasses import dataclass

from soap_edge.config import NHS_NUMBER_OID
from xcagw_common.nhs_number import normalise_nhs_number

__all__ = ["Cx", "nhs_cx", "normalise_nhs_number", "parse_cx"]


@dataclass(frozen=True)
class Cx:
    """An HL7 v2 CX: `id^^^&universalId&ISO` (ITI TF-3 4.2.3.1.7)."""

    id: str
    authority: str

    def render(self) -> str:
        return f"{self.id}^^^&{self.authority}&ISO"


def parse_cx(value: str) -> Cx | None:
    """Parse a CX and its assigning authority (component 4, sub-component 2); None if malformed."""
    comps = value.strip().split("^")
    if len(comps) < 4 or not comps[0]:
        return None
    subs = comps[3].split("&")
    if len(subs) < 2 or not subs[1]:
        return None
    if len(subs) >= 3 and subs[2] and subs[2] != "ISO":
        return None
    return Cx(id=comps[0], authority=subs[1])


def nhs_cx(nhs_number: str) -> Cx:
    return Cx(id=nhs_number, authority=NHS_NUMBER_OID)
