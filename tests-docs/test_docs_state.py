"""The architecture pages stay true to the code: Redis keys and the captured example messages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / "docs" / "architecture" / "state.md"
SOAP_EDGE_PREFIX = "xcagw:soap-edge:"
EXAMPLES = REPO / "docs" / "partners" / "examples"
# Modules that define Redis keys, per their own docstrings ("the one place ... keys are defined").
KEY_MODULES = (
    "services/soap-edge/src/soap_edge/store.py",
    "services/soap-edge/src/soap_edge/security/ratelimit.py",
    "services/soap-edge/src/soap_edge/security/audit.py",
    "services/pds-adapter/src/pds_adapter/cache.py",
    "services/gpconnect-adapter/src/gpconnect_adapter/sds.py",
    "services/token-service/src/token_service/oauth.py",
    "services/token-service/src/token_service/rotation.py",
    "services/ccda-converter/src/ccda_converter/dmd.py",
)


def _normalise(key: str) -> str:
    """`doc:{uniqueId}` and `doc:{unique_id}` compare equal: placeholders become `{}`."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", key)


def test_soap_edge_key_families_are_documented() -> None:
    source = (REPO / KEY_MODULES[0]).read_text()
    doc = ast.get_docstring(ast.parse(source)) or ""
    families = re.findall(r"^- `([^`]+)`", doc, re.M)
    assert len(families) >= 8, "soap_edge.store no longer lists its keys in its docstring"
    page = {_normalise(k) for k in re.findall(r"`([^`]+)`", STATE.read_text())}
    missing = [k for k in families if _normalise(k) not in page]
    assert not missing, f"soap-edge Redis keys missing from {STATE.name}: {missing}"


def test_every_key_prefix_in_the_code_is_documented() -> None:
    page = STATE.read_text()
    for rel in KEY_MODULES:
        path = REPO / rel
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        literals = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        for part in ast.walk(tree):
            if isinstance(part, ast.JoinedStr):
                literals.append(
                    "".join(
                        v.value
                        for v in part.values
                        if isinstance(v, ast.Constant) and isinstance(v.value, str)
                    )
                )
        prefixes = {
            m.group(0).rstrip(":")
            for text in literals
            for m in [re.match(r"^(xcagw|ccda):[a-z0-9:-]+", text)]
            if m
        }
        for prefix in prefixes:
            # soap-edge's table names its keys without the common `xcagw:soap-edge:` prefix.
            short = prefix.removeprefix(SOAP_EDGE_PREFIX)
            wanted = f"`{short}:" if short != prefix and short else prefix
            assert wanted in page, f"{rel}: Redis key prefix {prefix!r} not in {STATE.name}"


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.xml")) if EXAMPLES.exists() else []


def test_every_included_example_exists_and_is_well_formed() -> None:
    if not _examples():
        pytest.skip("no captured examples; run `make docs-examples`")
    included = set()
    for page in (REPO / "docs").rglob("*.md"):
        included |= set(re.findall(r'--8<-- "docs/partners/examples/([^"]+)"', page.read_text()))
    assert included, "the partner pages include no examples"
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    for name in sorted(included):
        text = (EXAMPLES / name).read_text()
        if "<!-- MIME part" in text:
            # MTOM: the root part is XML; later parts are cut short on purpose.
            text = text.split("<!-- MIME part 2")[0].split("-->", 2)[-1]
        root = etree.fromstring(text.encode(), parser)
        assert etree.QName(root).localname == "Envelope", name
