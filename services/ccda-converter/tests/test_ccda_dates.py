"""FHIR dates -> HL7 TS: impossible calendar dates never reach the CCD.

The regex of dates.py checks only the shape; "1987-02-29" (no leap year) used to come out as the
TS 19870229, which is no valid HL7 date and, as the CCD's serviceEvent low, broke soap-edge's
strptime when it derived the XDS serviceStartTime. An impossible date is handled like any other
unreadable one: no TS (the caller writes a nullFlavor).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from ccda_testkit import NS, WHEN, cc, collection, condition, patient
from lxml import etree

from ccda_converter.convert import ConvertOptions, convert_bundle
from ccda_converter.dates import to_ts

_TS = re.compile(r"^(\d{4,14})(\.\d+)?([+-]\d{4})?$")


@pytest.mark.parametrize(
    "value",
    [
        "1987-02-29",  # 1987 is no leap year
        "1987-02-29T09:00:00+00:00",
        "1900-02-29T09:00",  # divisible by 100, not by 400: no leap year
        "2023-04-31",
        "2023-06-31T10:00:00Z",
        "2023-02-30",
        "2023-00-10",
        "2023-05-00",
        "0000",
        "0000-01-01",
        "2023-05-31T24:00",
        "2023-05-31T10:60",
        "2023-05-31T10:00:61",
        "2023-05-31T10:00:00+14:30",  # FHIR offsets end at +14:00
        "2023-05-31T10:00:00-05:60",
    ],
)
def test_impossible_dates_give_no_ts(value: str) -> None:
    assert to_ts(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1988-02-29", "19880229"),
        ("2000-02-29T09:00:00+00:00", "20000229090000+0000"),
        ("2023-04-30", "20230430"),
        ("2023-12-31T23:59:59.999-05:00", "20231231235959.999-0500"),
        ("2016-12-31T23:59:60Z", "20161231235960+0000"),  # FHIR dateTime allows leap seconds
        ("2023-05-31T00:00", "202305310000"),
        ("2023-05-31T10:00:00+14:00", "20230531100000+1400"),
        ("2023-05-31T10:00:00-13:59", "20230531100000-1359"),
        ("0001", "0001"),
        ("2023-02", "202302"),
    ],
)
def test_real_dates_convert_unchanged(value: str, expected: str) -> None:
    assert to_ts(value) == expected


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    """Jane SMITH, born on a day that never was (no practice), and ``resources``."""
    return collection(patient(name_use=None, birth_date="1987-02-29", practice=None), *resources)


def _condition(cid: str, code: str, onset: str) -> dict[str, Any]:
    return condition(cid, cc(code, code), onsetDateTime=onset)


def _real_ts(value: str) -> bool:
    m = _TS.match(value)
    if m is None:
        return False
    digits = m.group(1)
    if len(digits) < 8:
        return True
    try:
        dt.datetime.strptime(digits[:12].ljust(12, "0"), "%Y%m%d%H%M")
    except ValueError:
        return False
    return True


def test_impossible_onset_is_not_the_service_event_low() -> None:
    result = convert_bundle(
        _bundle(
            _condition("c1", "38341003", "1987-02-29T09:00:00+00:00"),
            _condition("c2", "195967001", "1990-03-01T10:00:00+00:00"),
        ),
        options=ConvertOptions(effective_time=WHEN),
    )
    root = etree.fromstring(result.ccd_xml)
    low = root.find("cda:documentationOf/cda:serviceEvent/cda:effectiveTime/cda:low", NS)
    # The earliest *real* clinical date; the impossible one is not a date at all.
    assert low.get("value") == "19900301100000+0000"
    birth = root.find("cda:recordTarget/cda:patientRole/cda:patient/cda:birthTime", NS)
    assert birth.get("value") is None and birth.get("nullFlavor") == "UNK"
    onset = root.xpath(
        "//cda:observation[cda:value/@code='38341003']/cda:effectiveTime/cda:low",
        namespaces=NS,
    )
    assert [o.get("nullFlavor") for o in onset] == ["UNK"]
    values = root.xpath(
        "//cda:*[local-name()='time' or local-name()='low' or local-name()='high' or "
        "local-name()='effectiveTime' or local-name()='birthTime']/@value",
        namespaces=NS,
    )
    assert values and all(_real_ts(v) for v in values), values
