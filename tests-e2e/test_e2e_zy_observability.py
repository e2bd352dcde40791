"""During an e2e run: every metric a dashboard or alert uses is exposed by some service, and every
log line our services write is ECS JSON the log pipeline can ingest."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

from xcagw_devstack.launcher import GRPC_SERVICES, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests-deploy"))
from deploy_logs import check_ecs_line  # noqa: E402
from deploy_metrics import service_metric_names_used  # noqa: E402

# `# TYPE <family> <type>` in the Prometheus text format.
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total", "_info")


def _families(text: str) -> set[str]:
    return {m.group(1) for m in TYPE_LINE.finditer(text)}


def test_every_dashboard_and_alert_metric_is_exposed(stack: Stack) -> None:
    urls = [f"http://127.0.0.1:{stack.ports[f'{name}-metrics']}/metrics" for name in GRPC_SERVICES]
    urls.append(f"{stack.management_url}/metrics")
    families: set[str] = set()
    for url in urls:
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, url
        families |= _families(response.text)
    missing = []
    for name in sorted(service_metric_names_used()):
        candidates = {name} | {name.removesuffix(s) for s in SAMPLE_SUFFIXES}
        if not candidates & families:
            missing.append(name)
    assert missing == [], f"used by dashboards/alerts but exposed by no service: {missing}"


def test_service_logs_are_ecs_json_with_trace_and_correlation(stack: Stack) -> None:
    checked = 0
    with_trace = 0
    for name in (*GRPC_SERVICES, "soap-edge"):
        path = stack.logs_dir / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            problems = check_ecs_line(line)
            assert problems == [], (name, problems, line[:300])
            checked += 1
            if '"trace.id"' in line:
                with_trace += 1
                assert check_ecs_line(line, in_span=True) == [], (name, line[:300])
    assert checked > 20
    assert with_trace > 0, "no log line carried trace.id / span.id"
