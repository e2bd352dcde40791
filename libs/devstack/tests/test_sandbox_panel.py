"""The built-in panel: valid NHS numbers, coverage of every behaviour, documented in SANDBOX.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from xcagw_common.nhs_number import is_valid_nhs_number
from xcagw_devstack.sandbox.panel import PANEL, PRACTICES, get_patient, get_practice

SANDBOX_MD = Path(__file__).resolve().parents[1] / "SANDBOX.md"


@pytest.mark.parametrize(
    "nhs",
    [
        "9000000009",
        "9000000017",
        "9000000025",
        "9000000033",
        "9111231130",
        "9690937278",
        "9999999999",
        "943 476 5919",
    ],
)
def test_valid_nhs_numbers(nhs: str) -> None:
    assert is_valid_nhs_number(nhs)


@pytest.mark.parametrize(
    "nhs",
    [
        "9000000000",
        "9000000001",
        "9432003812",
        "900000000",
        "90000000091",
        "900000000X",
        "",
        "٩٠٠٠٠٠٠٠٠٩",
    ],
)
def test_invalid_nhs_numbers(nhs: str) -> None:
    assert not is_valid_nhs_number(nhs)


def test_panel_numbers_are_valid_and_unique() -> None:
    numbers = [p.nhs_number for p in PANEL]
    assert len(numbers) >= 10
    assert len(set(numbers)) == len(numbers)
    assert all(is_valid_nhs_number(n) for n in numbers)
    assert "9000000009" in numbers


def test_panel_covers_every_behaviour() -> None:
    assert get_patient("9000000009") is not None
    assert any(p.security == "R" for p in PANEL)
    superseded = [p for p in PANEL if p.superseded_by]
    assert superseded
    for p in superseded:
        target = get_patient(p.superseded_by or "")
        assert target is not None and target.superseded_by is None and not target.invalidated
    assert any(p.invalidated and not p.superseded_by for p in PANEL)
    assert any(p.deceased for p in PANEL)
    assert any(p.gp_ods is None for p in PANEL)
    assert any(p.record == "empty" for p in PANEL)
    assert any(p.record == "huge" and (p.record_size or 0) >= 1000 for p in PANEL)
    assert {p.gpconnect_outcome for p in PANEL} >= {"NO_PATIENT_CONSENT", "NO_RELATIONSHIP"}
    searchable = [
        (p.family, p.birth_date) for p in PANEL if not p.superseded_by and not p.invalidated
    ]
    assert len(searchable) > len(set(searchable)), "a pair must give TOO_MANY_MATCHES"


def test_practices_have_distinct_ods_and_asids() -> None:
    assert len({p.ods for p in PRACTICES}) == len(PRACTICES) >= 3
    assert len({p.asid for p in PRACTICES}) == len(PRACTICES)
    gps = {p.gp_ods for p in PANEL if p.gp_ods}
    assert len(gps) >= 3
    assert all(get_practice(ods) is not None for ods in gps)


def test_lookup_helpers() -> None:
    assert get_patient("900 000 0009") is get_patient("9000000009")
    assert get_patient("9111231130") is None
    assert get_practice("y12345") is get_practice("Y12345")
    assert get_practice("ZZZ") is None


def test_sandbox_md_documents_the_panel() -> None:
    text = SANDBOX_MD.read_text(encoding="utf-8")
    for p in PANEL:
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| {p.nhs_number} |")), None
        )
        assert row is not None, p.nhs_number
        assert p.family in row
        assert p.birth_date in row
    for practice in PRACTICES:
        assert f"| {practice.ods} | {practice.name} | {practice.asid} |" in text
