"""Grafana provisioning + dashboards and the OTel collector configuration hang together."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import yaml
from deploy_tools import DEPLOY

GRAFANA = DEPLOY / "grafana"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "xcagw_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is being built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_builder_produces() -> None:
    rendered = _builder().rendered()
    committed = {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == set(rendered)
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"{name} is stale: run `python deploy/grafana/build_dashboards.py`"
        )


def test_dashboards_cover_the_issue_and_use_provisioned_datasources() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text()
    )["datasources"]
    uids = {d["uid"]: d["type"] for d in datasources}
    assert uids["prometheus"] == "prometheus"
    docs = {p.stem: json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(docs) == {
        "xcagw-overview",
        "xcagw-transactions",
        "xcagw-nhs-upstreams",
        "xcagw-redis",
    }
    for uid, doc in docs.items():
        assert doc["uid"] == uid
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        panels = [p for p in doc["panels"] if p["type"] != "row"]
        assert len(panels) >= 6, uid
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in panels:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (uid, panel["title"])
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_collector_pipeline_references_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    service = config["service"]
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{kind}: {component}"
    assert set(service["extensions"]) <= set(config["extensions"])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    traces = service["pipelines"]["traces"]["processors"]
    # Memory limiter first and batch last (collector guidance); scrubbing before export.
    assert traces[0] == "memory_limiter" and traces[-1] == "batch"
    assert "transform/scrub-nhs-numbers" in traces
