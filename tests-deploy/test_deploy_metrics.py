"""Dashboards and alert rules only use metric names that exist: in our code, in
prometheus_client's default collectors, in a documented external exporter, or pending in the
issue that owns them."""

from __future__ import annotations

import pytest
from deploy_metrics import (
    EXTERNAL_METRICS,
    PENDING_METRICS,
    default_collector_names,
    exposed_names,
    metric_names_in_code,
    metric_names_used,
    metrics_defined_in_code,
    promql_metric_names,
    recording_rule_names,
    service_metric_names_used,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le, transaction)"
            " (rate(xcagw_soap_request_seconds_bucket"
            '{transaction=~"$transaction"}[$__rate_interval])))',
            {"xcagw_soap_request_seconds_bucket"},
        ),
        (
            'sum by (outcome) (rate(a_total{x="y"}[5m])) /'
            " ignoring(outcome) group_left sum(rate(a_total[5m]))",
            {"a_total"},
        ),
        ("time() - max(k_seconds) > 100 * 86400", {"k_seconds"}),
        ('redis_up == 0 or up{job="redis"} == 0', {"redis_up", "up"}),
        ("xcagw:grpc_server_errors:ratio_rate5m > 0.05", {"xcagw:grpc_server_errors:ratio_rate5m"}),
        (
            'label_replace(m, "dst", "$1", "src", "(.*)") unless on (job) n offset 1h',
            {"m", "n"},
        ),
        ("deriv(b[15m]) > 0 and b > 1e3", {"b"}),
    ],
)
def test_promql_names_are_extracted(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_code_scan_finds_the_shared_metrics() -> None:
    defined = metrics_defined_in_code()
    assert defined["xcagw_grpc_server_handled_total"] == "Counter"
    assert defined["xcagw_grpc_server_handling_seconds"] == "Histogram"
    assert defined["xcagw_upstream_request_seconds"] == "Histogram"
    assert defined["xcagw_cache_requests_total"] == "Counter"
    names = metric_names_in_code()
    assert "xcagw_grpc_server_handling_seconds_bucket" in names
    assert {"process_cpu_seconds_total", "process_open_fds", "process_max_fds"} <= names
    assert "process_resident_memory_bytes" in default_collector_names()


def test_exposed_names_follow_prometheus_client() -> None:
    assert exposed_names("x_total", "Counter") == {"x_total", "x_created"}
    assert exposed_names("x_seconds", "Histogram") == {
        "x_seconds_bucket",
        "x_seconds_count",
        "x_seconds_sum",
        "x_seconds_created",
    }
    assert exposed_names("x_state", "Gauge") == {"x_state"}


def test_dashboards_and_alerts_use_only_existing_metric_names() -> None:
    used = metric_names_used()
    assert len(used) > 25
    known = metric_names_in_code() | set(EXTERNAL_METRICS) | set(PENDING_METRICS)
    # Everything the alerts need is now emitted by the services themselves.
    assert {
        "xcagw_audit_backlog_messages",
        "xcagw_certificate_expiry_timestamp_seconds",
        "xcagw_signing_key_activated_timestamp_seconds",
    } <= metric_names_in_code()
    unknown = sorted(used - known)
    assert not unknown, (
        f"metric names used in deploy/grafana or deploy/prometheus but defined nowhere: {unknown}"
    )


def test_pending_and_external_lists_hold_only_names_still_used() -> None:
    used = metric_names_used()
    assert set(PENDING_METRICS) <= used
    assert set(EXTERNAL_METRICS) <= used
    for name, owner in PENDING_METRICS.items():
        assert owner.startswith("#"), f"{name}: pending metrics name the issue that adds them"


def test_recording_rules_are_namespaced_and_not_service_metrics() -> None:
    recorded = recording_rule_names()
    assert recorded
    assert all(name.startswith("xcagw:") for name in recorded)
    assert not recorded & service_metric_names_used()


def test_service_contract_excludes_external_exporters() -> None:
    names = service_metric_names_used()
    assert "xcagw_soap_requests_total" in names
    assert "process_resident_memory_bytes" in names
    assert not names & set(EXTERNAL_METRICS)
