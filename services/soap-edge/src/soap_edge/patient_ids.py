"""Patient identifiers: NHS number check (Modulus 11) and HL7 v2 CX values used in XDS metadata."""

from __future__ import annotations

from dataclasses import dataclass

from soap_edge.config import NHS_NUMBER_OID


def normalise_nhs_number(value: str) -> str | None:
    """The 10-digit NHS number, or None when it fails the format or Modulus 11 check.

    NHS Data Dictionary "NHS NUMBER": weights 10..2 over digits 1-9, check = 11 - (sum mod 11),
    11 -> 0, 10 -> invalid. Non-digits are invalid, never an exception.
    """
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return None
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - (total % 11)
    if check == 11:
        check = 0
    if check == 10 or check != int(digits[9]):
        return None
    return digits


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
