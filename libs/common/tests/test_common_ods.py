"""xcagw_common.ods: the requesting organisation's ODS code (GP Connect JWT and PDS header)."""

from __future__ import annotations

import pytest

from xcagw_common.ods import is_ods_code, resolve_ods_code, validate_ods_map

OID = "urn:oid:2.16.840.1.113883.2.1.3.9.1"
ODS_MAP = {OID: "RXX01", "A81001": "B82002"}


@pytest.mark.parametrize("value", ["X26", "RXX01", "Y12345", "A81001", "ABCDEFGHIJ", "123"])
def test_ods_codes(value: str) -> None:
    assert is_ods_code(value)


@pytest.mark.parametrize(
    "value", ["", "X2", "ABCDEFGHIJK", "rxx01", "RXX-01", " RXX01", "RXX01\n", "R\u0391X01", OID]
)
def test_not_ods_codes(value: str) -> None:
    assert not is_ods_code(value)


@pytest.mark.parametrize(
    ("organization_id", "default", "expected"),
    [
        (OID, "Y12345", "RXX01"),  # mapped
        (f"  {OID}\t", "Y12345", "RXX01"),  # compared without surrounding whitespace
        ("A81001", "Y12345", "B82002"),  # the map wins over the id's own shape
        ("RR8", "Y12345", "RR8"),  # an ODS code used as itself
        (" RR8 ", "Y12345", "RR8"),
        ("urn:oid:1.2.3", "Y12345", "Y12345"),  # neither: the default
        ("rr8", "Y12345", "Y12345"),  # lower case is not an ODS code
        ("", "Y12345", "Y12345"),
        ("   ", "Y12345", "Y12345"),
        ("urn:oid:1.2.3", "", ""),  # no default: nothing (callers leave the value out)
        ("", "", ""),
    ],
)
def test_resolve_ods_code(organization_id: str, default: str, expected: str) -> None:
    assert resolve_ods_code(organization_id, ODS_MAP, default) == expected


def test_an_empty_id_never_matches_a_map_entry() -> None:
    assert resolve_ods_code("", {"": "RXX01"}, "Y12345") == "Y12345"


def test_validate_ods_map_strips_keys_and_values() -> None:
    assert validate_ods_map({f" {OID} ": " RXX01 ", "b": "A81001"}) == {
        OID: "RXX01",
        "b": "A81001",
    }
    assert validate_ods_map({}) == {}


@pytest.mark.parametrize(
    ("ods_map", "message"),
    [
        ({OID: "rxx01"}, "'rxx01' for 'urn:oid:"),
        ({OID: ""}, "is not an ODS code"),
        ({OID: "RX\r\nX"}, "is not an ODS code"),
        ({"  ": "RXX01"}, "must not be empty"),
        ({"a": "RXX01", " a ": "RR8"}, "mapped twice"),
    ],
)
def test_validate_ods_map_refuses_bad_entries(ods_map: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_ods_map(ods_map)


def test_validate_ods_map_accepts_the_same_code_twice() -> None:
    assert validate_ods_map({"a": "RXX01", " a": "RXX01"}) == {"a": "RXX01"}
