"""Metric names: those the dashboards and alert rules use, and those the code exports.

`metric_names_used()` is the contract for the live check during an e2e run (scrape every
service's /metrics, then every name in `service_metric_names_used()` must appear in a `# TYPE`
or sample line). Names are the exposed sample names (`x_bucket`, `x_total`...), as PromQL sees them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"

# Exported by other programs, not by our services: Prometheus itself (`up`) and redis_exporter
# (oliver006/redis_exporter, default namespace "redis"). The live e2e check skips these.
EXTERNAL_METRICS: dict[str, str] = {
    "up": "Prometheus (scrape health of every target)",
    "redis_up": "redis_exporter",
    "redis_connected_clients": "redis_exporter",
    "redis_memory_used_bytes": "redis_exporter",
    "redis_aof_enabled": "redis_exporter",
    "redis_commands_processed_total": "redis_exporter",
    "redis_db_keys": "redis_exporter",
    "redis_evicted_keys_total": "redis_exporter",
    "redis_expired_keys_total": "redis_exporter",
    "redis_keyspace_hits_total": "redis_exporter",
    "redis_keyspace_misses_total": "redis_exporter",
}

# Metrics the alerts of issue #10 need that other issues' code has not exported yet, with the
# issue that owns them. A name listed here that appears in the code is fine (remove it then).
# Names used by dashboards or alerts before the code defines them (issue number first).
PENDING_METRICS: dict[str, str] = {}

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_LABEL_LIST_KEYWORDS = r"(?:by|without|on|ignoring|group_left|group_right)"


def _strip_grafana_variables(expr: str) -> str:
    expr = re.sub(r"\$__(?:rate_interval|interval|range)", "5m", expr)
    # Template variables only occur inside label matcher strings here.
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names referenced by one PromQL expression.

    A small tokenizer rather than a parser: strings and label matchers are removed, then every
    identifier that is not a function call, keyword or label list is a metric name.
    """
    text = _strip_grafana_variables(expr)
    # String literals (label values, label_replace arguments).
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"`[^`]*`", "``", text)
    # Label matchers and range/subquery selectors.
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    # Label lists after aggregation / vector-matching keywords.
    text = re.sub(rf"\b{_LABEL_LIST_KEYWORDS}\s*\([^()]*\)", " ", text)
    names: set[str] = set()
    for match in re.finditer(
        r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?[a-z]*)|([A-Za-z_:][A-Za-z0-9_:]*)", text
    ):
        ident = match.group(2)
        if ident is None or ident.lower() in _PROMQL_KEYWORDS:
            continue
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function or aggregation operator
        names.add(ident)
    return names


@dataclass(frozen=True)
class Expression:
    source: str  # file and rule/panel it came from
    expr: str


def _grafana_template_query(query: str) -> str | None:
    """The PromQL inside a Grafana variable query (`label_values(expr, label)`, ...)."""
    query = query.strip()
    match = re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", query, re.S)
    if match:
        return match.group(1)
    match = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if match:
        return match.group(1)
    if re.fullmatch(r"label_values\(\s*\w+\s*\)|label_names\(\)|metrics\(.*\)", query):
        return None
    return query


def dashboard_expressions(directory: Path = DASHBOARDS_DIR) -> list[Expression]:
    found: list[Expression] = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in _panels(doc.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(Expression(f"{path.name}: {panel.get('title')}", target["expr"]))
        for var in doc.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            inner = _grafana_template_query(str(query or ""))
            if inner:
                found.append(Expression(f"{path.name}: variable {var.get('name')}", inner))
    return found


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        nested = panel.get("panels")
        if isinstance(nested, list):
            yield from _panels(nested)


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    return sorted(directory.glob("*.rules.yml"))


def rule_expressions(directory: Path = RULES_DIR) -> list[Expression]:
    found: list[Expression] = []
    for path in rule_files(directory):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found.append(Expression(f"{path.name}: {name}", rule["expr"]))
    return found


def recording_rule_names(directory: Path = RULES_DIR) -> set[str]:
    names: set[str] = set()
    for path in rule_files(directory):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(r["record"] for r in group["rules"] if "record" in r)
    return names


def metric_names_used() -> set[str]:
    """Every metric name referenced by the dashboards and the alert/recording rules.

    Recording-rule outputs (`xcagw:...`) are left out: they are defined by the rules themselves.
    """
    recorded = recording_rule_names()
    names: set[str] = set()
    for expression in [*dashboard_expressions(), *rule_expressions()]:
        names |= promql_metric_names(expression.expr)
    return names - recorded


def service_metric_names_used() -> set[str]:
    """The names our services must export (what an e2e scrape checks): no external exporters."""
    return metric_names_used() - set(EXTERNAL_METRICS)


# ---- names in the code ---------------------------------------------------------------------

_KIND_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("", "_count", "_sum", "_created"),
    "Gauge": ("",),
    "Info": ("_info",),
    "Enum": ("",),
}


def source_dirs() -> list[Path]:
    return sorted(p for p in [*REPO.glob("libs/*/src"), *REPO.glob("services/*/src")] if p.is_dir())


@cache
def metrics_defined_in_code() -> dict[str, str]:
    """Metric base name -> prometheus_client kind, for every `Counter("xcagw_...", ...)` etc."""
    defined: dict[str, str] = {}
    for root in source_dirs():
        for path in root.rglob("*.py"):
            try:
                tree = ast.parse(path.read_text(), filename=str(path))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if kind not in _KIND_SUFFIXES:
                    continue
                first = node.args[0] if node.args else None
                for keyword in node.keywords:
                    if keyword.arg == "name":
                        first = keyword.value
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    defined[first.value] = kind
    return defined


def exposed_names(base: str, kind: str) -> set[str]:
    """The sample names prometheus_client exposes for one metric (Counter strips `_total`)."""
    if kind == "Counter" and base.endswith("_total"):
        base = base[: -len("_total")]
    return {base + suffix for suffix in _KIND_SUFFIXES[kind]}


@cache
def default_collector_names() -> set[str]:
    """process_* / python_* names of prometheus_client's default collectors (every service)."""
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    names: set[str] = set()
    for family in registry.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
    return names


def metric_names_in_code() -> set[str]:
    names = set(default_collector_names())
    for base, kind in metrics_defined_in_code().items():
        names |= exposed_names(base, kind)
    return names
