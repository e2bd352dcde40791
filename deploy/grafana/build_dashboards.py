"""Builds the Grafana dashboards in deploy/grafana/dashboards/ from the definitions below.

The JSON files are committed (Grafana provisioning reads them); edit this file and run
`python deploy/grafana/build_dashboards.py` to regenerate, `--check` to fail on drift
(tests-deploy does). Only metric names that the services export are used: tests-deploy checks
every name against the code (`deploy_metrics.metric_names_used()`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SERVICES = "soap-edge|token-service|pds-adapter|gpconnect-adapter|ccda-converter"


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    base_color: str = "green"

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        steps: list[dict[str, Any]] = [{"color": self.base_color, "value": None}]
        steps += [{"color": color, "value": value} for value, color in self.thresholds]
        doc: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": [
                {"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
                for n, (expr, legend) in enumerate(self.exprs)
            ],
            "fieldConfig": {
                "defaults": {
                    "unit": self.unit,
                    "thresholds": {"mode": "absolute", "steps": steps},
                },
                "overrides": [],
            },
        }
        if self.kind == "timeseries":
            doc["options"] = {
                "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif self.kind == "stat":
            doc["options"] = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "area",
            }
        return doc


@dataclass
class Row:
    title: str
    panels: list[Panel]


def _variable(name: str, label: str, query: str, *, include_all: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": include_all,
        "includeAll": include_all,
        "allValue": ".*",
        "current": {},
        "options": [],
    }


def dashboard(
    uid: str, title: str, description: str, rows: list[Row], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            panels.append(panel.to_json(panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    datasource_var = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "Prometheus", "value": "prometheus"},
        "hide": 0,
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["xcagw"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [datasource_var, *variables]},
        "annotations": {"list": []},
        "links": [
            {
                "title": "xcagw dashboards",
                "type": "dashboards",
                "tags": ["xcagw"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


def _quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{selector}[{RATE}])))"


def overview() -> dict[str, Any]:
    soap = 'xcagw_soap_requests_total{transaction=~"$transaction"}'
    rows = [
        Row(
            "Partner traffic (soap-edge)",
            [
                Panel(
                    "SOAP requests/s",
                    [(f"sum(rate({soap}[{RATE}]))", "requests/s")],
                    unit="reqps",
                    kind="stat",
                    width=6,
                    height=5,
                ),
                Panel(
                    "SOAP failure ratio",
                    [
                        (
                            f'sum(rate(xcagw_soap_requests_total{{outcome="failure",'
                            f' transaction=~"$transaction"}}[{RATE}]))'
                            f" / sum(rate({soap}[{RATE}]))",
                            "failures",
                        )
                    ],
                    unit="percentunit",
                    kind="stat",
                    width=6,
                    height=5,
                    thresholds=[(0.01, "orange"), (0.05, "red")],
                ),
                Panel(
                    "Services up",
                    [(f'sum(up{{job=~"{SERVICES}"}})', "up")],
                    kind="stat",
                    width=6,
                    height=5,
                    description="Scrape targets answering, out of 5 services (x replicas).",
                ),
                Panel(
                    "Latency SLO burn rate (1h)",
                    [("max(xcagw:soap_latency_slo_miss:ratio_rate1h) / 0.01", "burn rate")],
                    kind="stat",
                    width=6,
                    height=5,
                    description="1 = spending the 1% error budget (10 s, 99%) exactly on time.",
                    thresholds=[(6, "orange"), (14.4, "red")],
                ),
                Panel(
                    "SOAP requests by transaction and outcome",
                    [
                        (
                            f"sum by (transaction, outcome) (rate({soap}[{RATE}]))",
                            "{{transaction}} {{outcome}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "SOAP latency p95 by transaction",
                    [
                        (
                            _quantile(
                                0.95,
                                "xcagw_soap_request_seconds",
                                "transaction",
                                '{transaction=~"$transaction"}',
                            ),
                            "{{transaction}}",
                        )
                    ],
                    unit="s",
                    thresholds=[(10, "red")],
                ),
                Panel(
                    "SOAP faults by code",
                    [
                        (
                            f"sum by (code, subcode) (rate(xcagw_soap_faults_total[{RATE}]))",
                            "{{code}} {{subcode}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Backend failures seen by soap-edge",
                    [
                        (
                            f"sum by (backend, kind) (rate(xcagw_backend_failures_total[{RATE}]))",
                            "{{backend}} {{kind}}",
                        )
                    ],
                    unit="reqps",
                ),
            ],
        ),
        Row(
            "gRPC services",
            [
                Panel(
                    "gRPC requests/s by service",
                    [
                        (
                            f"sum by (service) (rate(xcagw_grpc_server_handled_total[{RATE}]))",
                            "{{service}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "gRPC server error ratio by service",
                    [("xcagw:grpc_server_errors:ratio_rate5m", "{{service}}")],
                    unit="percentunit",
                    thresholds=[(0.05, "red")],
                ),
                Panel(
                    "gRPC latency p99 by service",
                    [
                        (
                            _quantile(0.99, "xcagw_grpc_server_handling_seconds", "service"),
                            "{{service}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "gRPC status codes",
                    [
                        (
                            "sum by (service, code)"
                            f' (rate(xcagw_grpc_server_handled_total{{code!="OK"}}[{RATE}]))',
                            "{{service}} {{code}}",
                        )
                    ],
                    unit="reqps",
                ),
            ],
        ),
        Row(
            "Tokens, cache and audit",
            [
                Panel(
                    "Tokens minted by kind",
                    [
                        (
                            f"sum by (kind) (rate(xcagw_tokens_minted_total[{RATE}]))",
                            "{{kind}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Cache hit ratio by cache",
                    [
                        (
                            "sum by (cache)"
                            f' (rate(xcagw_cache_requests_total{{result="hit"}}[{RATE}]))'
                            f" / sum by (cache) (rate(xcagw_cache_requests_total[{RATE}]))",
                            "{{cache}}",
                        )
                    ],
                    unit="percentunit",
                    width=8,
                ),
                Panel(
                    "ATNA audit backlog",
                    [("sum by (job) (xcagw_audit_backlog_messages)", "{{job}}")],
                    width=8,
                    description="Audit messages waiting for the Audit Record Repository (#9).",
                    thresholds=[(1000, "orange"), (10000, "red")],
                ),
            ],
        ),
        Row(
            "Processes",
            [
                Panel(
                    "CPU by service",
                    [
                        (
                            "sum by (job)"
                            f' (rate(process_cpu_seconds_total{{job=~"$job"}}[{RATE}]))',
                            "{{job}}",
                        )
                    ],
                    unit="percentunit",
                    width=8,
                ),
                Panel(
                    "Resident memory by instance",
                    [
                        (
                            'process_resident_memory_bytes{job=~"$job"}',
                            "{{job}} {{instance}}",
                        )
                    ],
                    unit="bytes",
                    width=8,
                ),
                Panel(
                    "Open file descriptors (share of limit)",
                    [
                        (
                            'process_open_fds{job=~"$job"} / process_max_fds{job=~"$job"}',
                            "{{job}} {{instance}}",
                        )
                    ],
                    unit="percentunit",
                    width=8,
                    thresholds=[(0.8, "red")],
                ),
            ],
        ),
    ]
    return dashboard(
        "xcagw-overview",
        "xcagw / Overview",
        "Partner traffic, gRPC services, tokens, cache, audit and process health.",
        rows,
        [
            _variable(
                "transaction", "Transaction", "label_values(xcagw_soap_requests_total, transaction)"
            ),
            _variable("job", "Service", "label_values(process_start_time_seconds, job)"),
        ],
    )


def transactions() -> dict[str, Any]:
    sel = '{transaction=~"$transaction"}'
    rows = [
        Row(
            "Volume and outcome",
            [
                Panel(
                    "Requests/s by outcome",
                    [
                        (
                            "sum by (transaction, outcome)"
                            f" (rate(xcagw_soap_requests_total{sel}[{RATE}]))",
                            "{{transaction}} {{outcome}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Outcome share",
                    [
                        (
                            f"sum by (outcome) (rate(xcagw_soap_requests_total{sel}[{RATE}]))"
                            " / ignoring(outcome) group_left"
                            f" sum(rate(xcagw_soap_requests_total{sel}[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    unit="percentunit",
                ),
            ],
        ),
        Row(
            "Latency and SLO",
            [
                Panel(
                    "Latency quantiles",
                    [
                        (
                            _quantile(0.5, "xcagw_soap_request_seconds", "transaction", sel),
                            "p50 {{transaction}}",
                        ),
                        (
                            _quantile(0.95, "xcagw_soap_request_seconds", "transaction", sel),
                            "p95 {{transaction}}",
                        ),
                        (
                            _quantile(0.99, "xcagw_soap_request_seconds", "transaction", sel),
                            "p99 {{transaction}}",
                        ),
                    ],
                    unit="s",
                    thresholds=[(10, "red")],
                ),
                Panel(
                    "Share of requests slower than 10 s (SLO: < 1%)",
                    [
                        (
                            f"xcagw:soap_latency_slo_miss:ratio_rate5m{sel}",
                            "5m {{transaction}}",
                        ),
                        (
                            f"xcagw:soap_latency_slo_miss:ratio_rate1h{sel}",
                            "1h {{transaction}}",
                        ),
                        (
                            f"xcagw:soap_latency_slo_miss:ratio_rate6h{sel}",
                            "6h {{transaction}}",
                        ),
                    ],
                    unit="percentunit",
                    thresholds=[(0.01, "red")],
                ),
                Panel(
                    "Latency distribution",
                    [
                        (
                            f"sum by (le) (rate(xcagw_soap_request_seconds_bucket{sel}[{RATE}]))",
                            "{{le}}",
                        )
                    ],
                    kind="heatmap",
                    width=24,
                ),
            ],
        ),
        Row(
            "Behind the transaction",
            [
                Panel(
                    "gRPC calls by method and code",
                    [
                        (
                            "sum by (method, code)"
                            f" (rate(xcagw_grpc_server_handled_total[{RATE}]))",
                            "{{method}} {{code}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "gRPC p95 by method",
                    [
                        (
                            _quantile(0.95, "xcagw_grpc_server_handling_seconds", "method"),
                            "{{method}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Documents generated (ITI-39 on demand)",
                    [(f"sum(rate(xcagw_documents_generated_total[{RATE}]))", "documents/s")],
                    unit="ops",
                ),
                Panel(
                    "Faults returned",
                    [
                        (
                            f"sum by (code, subcode) (rate(xcagw_soap_faults_total[{RATE}]))",
                            "{{code}} {{subcode}}",
                        )
                    ],
                    unit="reqps",
                ),
            ],
        ),
    ]
    return dashboard(
        "xcagw-transactions",
        "xcagw / Per transaction",
        "ITI-47, ITI-55, ITI-38 and ITI-39: volume, outcomes, latency against the SLO.",
        rows,
        [
            _variable(
                "transaction", "Transaction", "label_values(xcagw_soap_requests_total, transaction)"
            )
        ],
    )


def upstreams() -> dict[str, Any]:
    sel = '{upstream=~"$upstream"}'
    rows = [
        Row(
            "NHS APIs",
            [
                Panel(
                    "Calls/s by upstream and status",
                    [
                        (
                            "sum by (upstream, status)"
                            f" (rate(xcagw_upstream_request_seconds_count{sel}[{RATE}]))",
                            "{{upstream}} {{status}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Failure ratio (5xx, timeout, connection error)",
                    [(f"xcagw:upstream_failures:ratio_rate5m{sel}", "{{upstream}}")],
                    unit="percentunit",
                    thresholds=[(0.1, "orange"), (0.5, "red")],
                ),
                Panel(
                    "Latency p95 by upstream",
                    [
                        (
                            _quantile(0.95, "xcagw_upstream_request_seconds", "upstream", sel),
                            "{{upstream}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Latency p99 by upstream",
                    [
                        (
                            _quantile(0.99, "xcagw_upstream_request_seconds", "upstream", sel),
                            "{{upstream}}",
                        )
                    ],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Resilience",
            [
                Panel(
                    "Retries by upstream and reason",
                    [
                        (
                            "sum by (upstream, reason)"
                            f" (rate(xcagw_upstream_retries_total{sel}[{RATE}]))",
                            "{{upstream}} {{reason}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Circuit breakers (0 closed, 1 open, 2 half-open)",
                    [("max by (name) (xcagw_circuit_breaker_state)", "{{name}}")],
                    width=8,
                    thresholds=[(1, "red")],
                ),
                Panel(
                    "Rate limiter decisions",
                    [
                        (
                            "sum by (name, result)"
                            f" (rate(xcagw_rate_limiter_decisions_total[{RATE}]))",
                            "{{name}} {{result}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Breaker transitions",
                    [
                        (
                            "sum by (name, state)"
                            f" (increase(xcagw_circuit_breaker_transitions_total[{RATE}]))",
                            "{{name}} -> {{state}}",
                        )
                    ],
                    width=24,
                ),
            ],
        ),
        Row(
            "NHS identity (token-service)",
            [
                Panel(
                    "Tokens by kind",
                    [
                        (
                            f"sum by (kind) (rate(xcagw_tokens_minted_total[{RATE}]))",
                            "{{kind}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "NHS access token errors by reason",
                    [
                        (
                            f"sum by (reason) (rate(xcagw_nhs_access_token_errors_total[{RATE}]))",
                            "{{reason}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Key rotations and retirements (24h)",
                    [
                        (
                            "sum by (trigger) (increase(xcagw_key_rotations_total[24h]))",
                            "rotations {{trigger}}",
                        ),
                        ("sum(increase(xcagw_keys_retired_total[24h]))", "retired"),
                    ],
                    width=8,
                ),
                Panel(
                    "Days until certificate expiry",
                    [
                        (
                            "min by (job, name)"
                            " (xcagw_certificate_expiry_timestamp_seconds - time()) / 86400",
                            "{{job}} {{name}}",
                        )
                    ],
                    unit="d",
                    width=12,
                    base_color="red",
                    thresholds=[(3, "orange"), (21, "green")],
                ),
                Panel(
                    "Days since the signing key became active",
                    [
                        (
                            "(time() - max(xcagw_signing_key_activated_timestamp_seconds)) / 86400",
                            "signing key age",
                        )
                    ],
                    unit="d",
                    width=12,
                    thresholds=[(90, "orange"), (100, "red")],
                ),
            ],
        ),
    ]
    return dashboard(
        "xcagw-nhs-upstreams",
        "xcagw / NHS upstreams",
        "PDS, OAuth, SDS, GP Connect and terminology: rates, errors, latency, resilience.",
        rows,
        [
            _variable(
                "upstream",
                "Upstream",
                "label_values(xcagw_upstream_request_seconds_count, upstream)",
            )
        ],
    )


def redis() -> dict[str, Any]:
    rows = [
        Row(
            "Redis server (redis_exporter)",
            [
                Panel(
                    "Up",
                    [("min(redis_up)", "redis_up")],
                    kind="stat",
                    width=6,
                    height=5,
                    base_color="red",
                    thresholds=[(1, "green")],
                ),
                Panel(
                    "Connected clients",
                    [("sum(redis_connected_clients)", "clients")],
                    kind="stat",
                    width=6,
                    height=5,
                ),
                Panel(
                    "Memory used",
                    [("sum(redis_memory_used_bytes)", "used")],
                    unit="bytes",
                    kind="stat",
                    width=6,
                    height=5,
                ),
                Panel(
                    "AOF enabled",
                    [("min(redis_aof_enabled)", "aof")],
                    kind="stat",
                    width=6,
                    height=5,
                    description="Must be 1: AOF makes acknowledged writes survive a restart.",
                    base_color="red",
                    thresholds=[(1, "green")],
                ),
                Panel(
                    "Commands/s",
                    [(f"sum(rate(redis_commands_processed_total[{RATE}]))", "commands/s")],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Keys by db",
                    [("sum by (db) (redis_db_keys)", "{{db}}")],
                    width=8,
                ),
                Panel(
                    "Evicted and expired keys/s",
                    [
                        (f"sum(rate(redis_evicted_keys_total[{RATE}]))", "evicted"),
                        (f"sum(rate(redis_expired_keys_total[{RATE}]))", "expired"),
                    ],
                    unit="ops",
                    width=8,
                ),
            ],
        ),
        Row(
            "Caches (services' view)",
            [
                Panel(
                    "Cache look-ups by cache and result",
                    [
                        (
                            f"sum by (cache, result) (rate(xcagw_cache_requests_total[{RATE}]))",
                            "{{cache}} {{result}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Cache error ratio by service",
                    [
                        (
                            "sum by (job)"
                            f' (rate(xcagw_cache_requests_total{{result="error"}}[{RATE}]))'
                            f" / sum by (job) (rate(xcagw_cache_requests_total[{RATE}]))",
                            "{{job}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(0.5, "red")],
                ),
                Panel(
                    "Server keyspace hit ratio",
                    [
                        (
                            f"sum(rate(redis_keyspace_hits_total[{RATE}]))"
                            f" / (sum(rate(redis_keyspace_hits_total[{RATE}]))"
                            f" + sum(rate(redis_keyspace_misses_total[{RATE}])))",
                            "hit ratio",
                        )
                    ],
                    unit="percentunit",
                ),
                Panel(
                    "Rate limiter fallbacks (Redis unavailable)",
                    [
                        (
                            "sum by (name) (rate(xcagw_rate_limiter_decisions_total"
                            f'{{result="local"}}[{RATE}]))',
                            "{{name}}",
                        )
                    ],
                    unit="ops",
                ),
            ],
        ),
    ]
    return dashboard(
        "xcagw-redis",
        "xcagw / Redis",
        "The shared Redis: server health from redis_exporter, cache behaviour from the services.",
        rows,
        [],
    )


DASHBOARDS = {
    "xcagw-overview.json": overview,
    "xcagw-transactions.json": transactions,
    "xcagw-nhs-upstreams.json": upstreams,
    "xcagw-redis.json": redis,
}


def rendered() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the xcagw Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    ns = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = OUT_DIR / name
        if ns.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.stderr.write(f"stale dashboards (run build_dashboards.py): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
