"""The built-in patient panel and GP practices, served consistently by PDS, SDS and GP Connect.

Every NHS number passes Modulus 11 and sits in the 900000xxxx test range. SANDBOX.md documents the
table; keep the two in step (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GetStructuredOutcome = Literal["NO_PATIENT_CONSENT", "NO_RELATIONSHIP"]
RecordKind = Literal["normal", "warnings", "empty", "huge"]


@dataclass(frozen=True)
class GpPractice:
    """A GP practice: its ODS code, SDS registration and GP Connect status."""

    ods: str
    name: str
    asid: str
    party_key: str
    address_lines: tuple[str, ...]
    city: str
    postcode: str
    phone: str
    in_sds: bool = True
    structured_enabled: bool = True
    """False: GP Connect answers 403 `ACCESS DENIED` (the capability is switched off)."""


@dataclass(frozen=True)
class PanelPatient:
    """One synthetic patient and the behaviours it demonstrates."""

    nhs_number: str
    family: str
    given: tuple[str, ...]
    prefix: str
    gender: Literal["male", "female", "other", "unknown"]
    birth_date: str
    address_lines: tuple[str, ...]
    city: str
    postcode: str
    phone: str | None
    email: str | None
    gp_ods: str | None
    demonstrates: str
    security: Literal["U", "R", "V"] = "U"
    superseded_by: str | None = None
    invalidated: bool = False
    deceased: str | None = None
    record: RecordKind = "normal"
    record_size: int | None = None
    gpconnect_outcome: GetStructuredOutcome | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def restricted(self) -> bool:
        """PDS `meta.security` R or V: location and GP must never be disclosed."""
        return self.security in ("R", "V")


PRACTICES: list[GpPractice] = [
    GpPractice(
        ods="Y12345",
        name="TREVELYAN SQUARE SURGERY",
        asid="918999198001",
        party_key="Y12345-0000801",
        address_lines=("1 Trevelyan Square", "Boar Lane"),
        city="LEEDS",
        postcode="LS1 6AE",
        phone="01632960100",
    ),
    GpPractice(
        ods="B82617",
        name="COXWOLD SURGERY",
        asid="918999198738",
        party_key="B82617-0000806",
        address_lines=("Whitehall 2", "Whitehall Quay"),
        city="LEEDS",
        postcode="LS1 4HR",
        phone="01632960200",
    ),
    GpPractice(
        ods="A20047",
        name="BRIGG MEDICAL CENTRE",
        asid="918999198920",
        party_key="A20047-0000810",
        address_lines=("2 Church Close", "Bonby"),
        city="BRIGG",
        postcode="DN20 0PQ",
        phone="01632960300",
    ),
    GpPractice(
        ods="Y90003",
        name="HIGH STREET PRACTICE",
        asid="918999199003",
        party_key="Y90003-0000812",
        address_lines=("14 High Street",),
        city="WAKEFIELD",
        postcode="WF1 1AA",
        phone="01632960400",
        structured_enabled=False,
    ),
    GpPractice(
        ods="Y90004",
        name="MOOR LANE SURGERY",
        asid="918999199004",
        party_key="Y90004-0000814",
        address_lines=("3 Moor Lane",),
        city="YORK",
        postcode="YO1 7AA",
        phone="01632960500",
        in_sds=False,
    ),
]

PANEL: list[PanelPatient] = [
    PanelPatient(
        nhs_number="9000000009",
        family="SMITH",
        given=("Jane",),
        prefix="Miss",
        gender="female",
        birth_date="2010-10-22",
        address_lines=("1 Trevelyan Square", "Boar Lane", "City Centre"),
        city="LEEDS",
        postcode="LS1 6AE",
        phone="01632960587",
        email="jane.smith@example.com",
        gp_ods="Y12345",
        demonstrates="Normal patient with a full record in every clinical area.",
    ),
    PanelPatient(
        nhs_number="9000000017",
        family="SMYTH",
        given=("Jayne",),
        prefix="Mrs",
        gender="female",
        birth_date="1982-06-16",
        address_lines=("12 Cookridge Street",),
        city="LEEDS",
        postcode="LS2 3AG",
        phone="01632960588",
        email=None,
        gp_ods="B82617",
        demonstrates=(
            "Normal patient; every List carries the confidential-items and data-in-transit "
            "warnings. Found by a fuzzy search for Jane Smith."
        ),
        record="warnings",
        warnings=("confidential-items", "data-in-transit"),
    ),
    PanelPatient(
        nhs_number="9000000025",
        family="SMYTHE",
        given=("Janet",),
        prefix="Mrs",
        gender="female",
        birth_date="2005-06-16",
        address_lines=("7 Secret Lane",),
        city="HULL",
        postcode="HU1 1AA",
        phone="01632960589",
        email=None,
        gp_ods="A20047",
        demonstrates=(
            "Restricted (meta.security R): PDS strips address, telecom and GP; never returned by "
            "postcode or GP searches; GP Connect answers PATIENT_NOT_FOUND."
        ),
        security="R",
    ),
    PanelPatient(
        nhs_number="9000000033",
        family="PARKER",
        given=("Sam",),
        prefix="Mr",
        gender="male",
        birth_date="1990-03-03",
        address_lines=("4 Station Road",),
        city="BRIGG",
        postcode="DN20 8AA",
        phone=None,
        email=None,
        gp_ods="A20047",
        demonstrates=(
            "Empty record: every List is empty with emptyReason no-content-recorded and the note "
            "'Information not available'."
        ),
        record="empty",
    ),
    PanelPatient(
        nhs_number="9000000041",
        family="CUFF",
        given=("Dorothy",),
        prefix="Mrs",
        gender="female",
        birth_date="1926-01-07",
        address_lines=("2 Church Close", "Bonby"),
        city="BRIGG",
        postcode="DN20 0PQ",
        phone=None,
        email=None,
        gp_ods="B82617",
        demonstrates=(
            "Superseded number: GET Patient/9000000041 returns the record of 9000000068 (id "
            "differs from the request); never returned by a search; GP Connect PATIENT_NOT_FOUND."
        ),
        superseded_by="9000000068",
    ),
    PanelPatient(
        nhs_number="9000000068",
        family="CUFF",
        given=("Dorothy",),
        prefix="Mrs",
        gender="female",
        birth_date="1926-01-07",
        address_lines=("2 Church Close", "Bonby"),
        city="BRIGG",
        postcode="DN20 0PQ",
        phone="01632960590",
        email=None,
        gp_ods="B82617",
        demonstrates="The retained record that 9000000041 resolves to; normal GP Connect record.",
    ),
    PanelPatient(
        nhs_number="9000000076",
        family="VALLANCE",
        given=("Ian",),
        prefix="Mr",
        gender="male",
        birth_date="1971-07-07",
        address_lines=("9 Quarry Hill",),
        city="LEEDS",
        postcode="LS2 7UE",
        phone=None,
        email=None,
        gp_ods="Y12345",
        demonstrates=(
            "Invalidated (not superseded): PDS 404 INVALIDATED_RESOURCE; "
            "GP Connect PATIENT_NOT_FOUND."
        ),
        invalidated=True,
    ),
    PanelPatient(
        nhs_number="9000000084",
        family="BLAKE",
        given=("Arthur", "John"),
        prefix="Mr",
        gender="male",
        birth_date="1935-02-11",
        address_lines=("22 Park Row",),
        city="LEEDS",
        postcode="LS1 5HD",
        phone="01632960591",
        email=None,
        gp_ods="Y12345",
        demonstrates=(
            "Deceased: PDS deceasedDateTime and DeathNotificationStatus; "
            "GP Connect PATIENT_NOT_FOUND."
        ),
        deceased="2023-11-02T00:00:00+00:00",
    ),
    PanelPatient(
        nhs_number="9000000092",
        family="SHAH",
        given=("Priya",),
        prefix="Ms",
        gender="female",
        birth_date="1999-09-09",
        address_lines=("5 Kirkgate",),
        city="BRADFORD",
        postcode="BD1 1SR",
        phone="01632960592",
        email=None,
        gp_ods=None,
        demonstrates=(
            "No GP: PDS has no generalPractitioner, so no SDS or GP Connect call is possible."
        ),
    ),
    PanelPatient(
        nhs_number="9000000106",
        family="HUGHES",
        given=("Margaret",),
        prefix="Mrs",
        gender="female",
        birth_date="1940-08-19",
        address_lines=("8 Albion Street",),
        city="LEEDS",
        postcode="LS1 6HX",
        phone="01632960593",
        email=None,
        gp_ods="Y12345",
        demonstrates="Huge record: about 5,000 Bundle entries (every clinical area).",
        record="huge",
        record_size=5000,
    ),
    PanelPatient(
        nhs_number="9000000114",
        family="JONES",
        given=("Alex",),
        prefix="Mr",
        gender="male",
        birth_date="1980-04-12",
        address_lines=("31 Otley Road",),
        city="LEEDS",
        postcode="LS6 3AA",
        phone="01632960594",
        email=None,
        gp_ods="B82617",
        demonstrates=(
            "Twin of 9000000122: family=JONES&birthdate=eq1980-04-12 gives TOO_MANY_MATCHES "
            "(HTTP 200 OperationOutcome); adding given=Alex gives one match."
        ),
    ),
    PanelPatient(
        nhs_number="9000000122",
        family="JONES",
        given=("Adam",),
        prefix="Mr",
        gender="male",
        birth_date="1980-04-12",
        address_lines=("31 Otley Road",),
        city="LEEDS",
        postcode="LS6 3AA",
        phone="01632960595",
        email=None,
        gp_ods="B82617",
        demonstrates="Twin of 9000000114 (TOO_MANY_MATCHES pair).",
    ),
    PanelPatient(
        nhs_number="9000000130",
        family="TAYLOR",
        given=("Chris",),
        prefix="Mr",
        gender="male",
        birth_date="1965-12-01",
        address_lines=("16 Bigby Street",),
        city="BRIGG",
        postcode="DN20 8EF",
        phone="01632960596",
        email=None,
        gp_ods="A20047",
        demonstrates="Dissent from record sharing: GP Connect 403 NO_PATIENT_CONSENT.",
        gpconnect_outcome="NO_PATIENT_CONSENT",
    ),
    PanelPatient(
        nhs_number="9000000149",
        family="BROWN",
        given=("Olivia",),
        prefix="Ms",
        gender="female",
        birth_date="1975-05-20",
        address_lines=("40 Westgate",),
        city="WAKEFIELD",
        postcode="WF1 1JY",
        phone="01632960597",
        email=None,
        gp_ods="Y90003",
        demonstrates=(
            "Registered at Y90003, where Access Record Structured is switched off: "
            "GP Connect 403 'ACCESS DENIED'."
        ),
    ),
    PanelPatient(
        nhs_number="9000000157",
        family="WILLIAMS",
        given=("Noah",),
        prefix="Mr",
        gender="male",
        birth_date="2001-01-30",
        address_lines=("6 Coney Street",),
        city="YORK",
        postcode="YO1 9QL",
        phone="01632960598",
        email=None,
        gp_ods="Y90004",
        demonstrates="Registered at Y90004, which has no SDS entry: SDS Device/Endpoint total 0.",
    ),
    PanelPatient(
        nhs_number="9000000165",
        family="EVANS",
        given=("Grace",),
        prefix="Mrs",
        gender="female",
        birth_date="1958-03-14",
        address_lines=("3 Swinegate",),
        city="LEEDS",
        postcode="LS1 4AG",
        phone="01632960599",
        email=None,
        gp_ods="Y12345",
        demonstrates=(
            "GP Connect 403 NO_RELATIONSHIP (no legitimate relationship with the consumer)."
        ),
        gpconnect_outcome="NO_RELATIONSHIP",
    ),
]

_BY_NHS = {p.nhs_number: p for p in PANEL}
_PRACTICE_BY_ODS = {p.ods: p for p in PRACTICES}


def get_patient(nhs: str) -> PanelPatient | None:
    """The panel entry for `nhs` exactly as stored (superseded and invalidated entries included)."""
    return _BY_NHS.get(nhs.replace(" ", ""))


def get_practice(ods: str) -> GpPractice | None:
    """The practice with this ODS code (case-insensitive), whether or not it is in SDS."""
    return _PRACTICE_BY_ODS.get(ods.upper())
