"""The CCD's serviceEvent times -> XDS serviceStartTime/serviceStopTime, and what a bad one does."""

from __future__ import annotations

import pytest
import soap_edge_testkit
from soap_edge_testkit import (
    HCID,
    JANE,
    REPO,
    UNIQUE_ID,
    envelope,
    fake_ccd,
    find_documents,
    post,
    retrieve_body,
)

from soap_edge.documents import hl7_ts_to_dtm

XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RIM = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}


@pytest.mark.parametrize(
    ("ts", "dtm"),
    [
        # Unchanged behaviour for real instants.
        ("20100101", "20100101"),
        ("2010", "2010"),
        ("201001", "201001"),
        ("202401011230", "202401011230"),
        ("20250101120000+0100", "20250101110000"),
        ("20240101123000.123+0530", "20240101070000"),
        ("202401010030-0100", "202401010130"),
        ("20240229090000+0000", "20240229090000"),
        # Shifted into another day, month and year.
        ("20250101003000+0100", "20241231233000"),
        # A year before 1000 keeps four digits (strftime's %Y does not pad them on glibc).
        ("09990101120000+0000", "09990101120000"),
    ],
)
def test_real_instants_convert_to_utc_dtm(ts: str, dtm: str) -> None:
    assert hl7_ts_to_dtm(ts) == dtm


@pytest.mark.parametrize(
    "ts",
    [
        "19870229090000+0000",  # 29 February of a common year (the reported case)
        "19870229",
        "20241301",
        "202400",
        "20240132120000+0000",
        "20240101250000+0000",
        "20240101126000+0000",
        "20240101120061+0000",
        "20240101120000+2400",  # no such zone offset
        "20240101120000+0160",
        "00000101",  # there is no year 0
        "00010101000000+0100",  # before year 1 once shifted to UTC
        "99991231235959-0100",  # after year 9999 once shifted to UTC
        "20240",  # odd lengths are not a TS precision
        "2024010112300",
        "not a date",
        "",
    ],
)
def test_impossible_or_unreadable_ts_yields_no_time(ts: str) -> None:
    assert hl7_ts_to_dtm(ts) == ""


def _slot(eo, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(v) for v in eo.xpath(f"rim:Slot[@name='{name}']//rim:Value/text()", namespaces=RIM)]


async def test_impossible_service_start_still_stores_and_serves_the_document(
    client, check, fakes, monkeypatch
) -> None:
    """The converter once emitted 1987-02-29: generation must not fail after GP Connect was
    called (nothing stored, every query for the patient failing and calling GP Connect again)."""

    def bad_low(ext: str) -> bytes:
        return fake_ccd(ext).replace(
            b'<low value="20100101"/>', b'<low value="19870229090000+0000"/>'
        )

    assert b"19870229" in bad_low("x")
    # The fake converter (another thread) looks the builder up on every call.
    monkeypatch.setattr(soap_edge_testkit, "fake_ccd", bad_low)
    first = check(await post(client, "/iti38", envelope(XCQ, find_documents(JANE))))
    assert first.xpath("string(//query:AdhocQueryResponse/@status)") == SUCCESS
    (eo,) = first.xpath("//rim:ExtrinsicObject")
    assert _slot(eo, "serviceStartTime") == []
    assert _slot(eo, "serviceStopTime") == ["20250101110000"]
    uid = first.xpath(UNIQUE_ID)
    # Stored: the next query is served from Redis, not by calling GP Connect again.
    again = check(await post(client, "/iti38", envelope(XCQ, find_documents(JANE))))
    assert again.xpath(UNIQUE_ID) == uid
    assert fakes.state.calls["GetStructuredRecord"] == 1
    assert fakes.state.calls["ConvertBundle"] == 1
    got = check(await post(client, "/iti39", envelope(XCR, retrieve_body((HCID, REPO, uid)))))
    assert got.xpath("string(//rs:RegistryResponse/@status)") == SUCCESS
    (content,) = got.attachments.values()
    assert b'<low value="19870229090000+0000"/>' in content
