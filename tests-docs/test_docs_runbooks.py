"""Every Prometheus alert rule has a runbook section, and the section names the alert."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "rules"
RUNBOOKS = REPO / "docs" / "operations" / "runbooks.md"
_HEADING = re.compile(r"^## (?P<title>.+?)(?: \{#(?P<anchor>[\w-]+)\})?\s*$", re.M)


def runbook_sections(text: str) -> dict[str, str]:
    """Anchor -> section text, for every `## Title {#anchor}` heading of runbooks.md."""
    heads = list(_HEADING.finditer(text))
    sections: dict[str, str] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        anchor = head.group("anchor")
        if anchor is None:
            anchor = re.sub(r"[^\w\s-]", "", head.group("title").lower()).strip().replace(" ", "-")
        sections[anchor] = text[head.start() : end]
    return sections


def test_every_alert_has_a_runbook_section(gen_docs: ModuleType) -> None:
    if not RULES.exists():
        pytest.skip("deploy/prometheus/rules/ does not exist")
    alerts = gen_docs.load_alerts(RULES)
    assert alerts, "no alert rules found"
    sections = runbook_sections(RUNBOOKS.read_text())
    missing = [f"{a.name} -> #{a.runbook}" for a in alerts if a.runbook not in sections]
    assert not missing, "alerts without a runbook section in runbooks.md:\n" + "\n".join(missing)
    unnamed = [a.name for a in alerts if f"`{a.name}`" not in sections[a.runbook]]
    assert not unnamed, f"runbook sections that do not name their alert: {unnamed}"


def test_runbook_sections_are_found_by_heading_anchor() -> None:
    text = "# R\n\n## Service down {#service-down}\n\nA `X`.\n\n## Redis down\n\nB\n"
    sections = runbook_sections(text)
    assert set(sections) == {"service-down", "redis-down"}
    assert "`X`" in sections["service-down"]


def test_an_alert_without_runbook_annotation_falls_back_to_its_name(gen_docs: ModuleType) -> None:
    assert gen_docs.runbook_anchor({"alert": "XcagwSomethingBroke"}) == "xcagw-something-broke"
    assert gen_docs.runbook_anchor({"alert": "A", "annotations": {"runbook": "redis-down"}}) == (
        "redis-down"
    )


def test_metrics_named_in_the_runbooks_exist_in_the_code() -> None:
    defined: set[str] = set()
    for root in ("libs", "services"):
        for path in (REPO / root).glob("*/src/**/*.py"):
            defined |= set(re.findall(r'"(xcagw_[a-z0-9_]+)"', path.read_text()))
    used = set(re.findall(r"\b(xcagw_[a-z0-9_]+)", RUNBOOKS.read_text()))
    unknown = sorted(
        name
        for name in used
        if re.sub(r"_(bucket|count|sum)$", "", name) not in defined and name not in defined
    )
    assert not unknown, f"runbooks.md queries metrics no service defines: {unknown}"
