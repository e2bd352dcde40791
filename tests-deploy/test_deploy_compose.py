"""docker-compose.yml: valid against the compose spec and shaped as issue #10 asks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from deploy_tools import REPO, run

from xcagw_devstack.launcher import GRPC_SERVICES

SERVICES = (*GRPC_SERVICES, "soap-edge")
COMPOSE_FILE = REPO / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def test_compose_file_is_valid_against_the_compose_spec(tool: Callable[[str], str]) -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_services_are_hardened_and_health_gated() -> None:
    services = _compose()["services"]
    for name in (*SERVICES, "sandbox"):
        svc = services[name]
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        test = svc["healthcheck"]["test"]
        # podman's Docker API splits CMD items on spaces: arguments with spaces use CMD-SHELL.
        assert test[0] == "CMD-SHELL" or (test[0] == "CMD" and not any(" " in t for t in test))
        assert svc["build"]["context"] == ".", name
        assert svc["build"]["args"]["BASE_IMAGE"].startswith("${BASE_IMAGE:-python:3.11-slim}")
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            expected = "service_healthy" if "healthcheck" in services[dep] else "service_started"
            assert spec["condition"] == expected, f"{name} -> {dep}"


def test_redis_keeps_data_with_aof_on_a_volume() -> None:
    doc = _compose()
    redis = doc["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in doc["volumes"]
    for name in SERVICES:
        assert doc["services"][name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_profiles_observability_and_elk() -> None:
    services = _compose()["services"]
    assert services["sandbox"]["profiles"] == ["dev"]
    for name in ("elasticsearch", "logstash", "kibana", "filebeat", "elk-setup"):
        assert services[name]["profiles"] == ["elk"], name
    for name in (*SERVICES, "redis", "otel-collector", "prometheus", "grafana", "jaeger"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    # Traces: services -> collector -> Jaeger.
    for name in SERVICES:
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert "http://otel-collector:4318" in endpoint
    assert services["otel-collector"]["environment"]["TRACES_BACKEND_ENDPOINT"] == "jaeger:4317"


def test_every_bind_mount_points_into_the_repo() -> None:
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} missing"
