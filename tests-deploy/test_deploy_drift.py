"""Drift: every service the launcher runs (GRPC_SERVICES + soap-edge) has a Kubernetes
Deployment, Service, probe and ports, a compose entry, a healthcheck and a scrape target, all
agreeing with dev.env (the single source of ports and names)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_k8s import OVERLAYS, by_kind, container, container_port, render
from deploy_tools import DEPLOY, REPO

from xcagw_devstack.launcher import GRPC_SERVICES, SERVICE_ORDER, env_prefix, read_env_file

SERVICES = (*GRPC_SERVICES, "soap-edge")
DEV_ENV = read_env_file(REPO / "dev.env")
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _port(name: str) -> int:
    return int(DEV_ENV[f"{env_prefix(name)}_PORT"])


def _metrics_port(name: str) -> int:
    # soap-edge serves /metrics and health on its management listener, not the partner port.
    if name == "soap-edge":
        return int(DEV_ENV["SOAP_EDGE_MANAGEMENT_PORT"])
    return int(DEV_ENV[f"{env_prefix(name)}_METRICS_PORT"])


def test_dev_env_has_every_port_the_launcher_assigns() -> None:
    for name in SERVICES:
        assert _port(name) > 0 and _metrics_port(name) > 0
    assert int(DEV_ENV["TOKEN_SERVICE_JWKS_HTTP_PORT"]) > 0
    assert set(SERVICES) <= set(SERVICE_ORDER)


@pytest.mark.parametrize("target", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_k8s_deployment_service_probe_and_ports_match_dev_env(target: str, name: str) -> None:
    docs = render(target)
    deployment = by_kind(docs, "Deployment")[name]
    service = by_kind(docs, "Service")[name]
    config = by_kind(docs, "ConfigMap")["xcagw-config"]["data"]
    prefix = env_prefix(name)
    main_port = "http" if name == "soap-edge" else "grpc"
    assert container_port(deployment, main_port) == _port(name)
    assert config[f"{prefix}_PORT"] == str(_port(name))
    assert config[f"{prefix}_HOST"] == "0.0.0.0"  # noqa: S104 - container listeners
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert svc_ports[main_port]["port"] == _port(name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(_metrics_port(name))
    ready = container(deployment)["readinessProbe"]
    if name == "soap-edge":
        assert ready["httpGet"]["port"] == "management"
        assert container_port(deployment, "management") == _metrics_port(name)
    else:
        assert ready["grpc"]["port"] == _port(name)
        assert container_port(deployment, "metrics") == _metrics_port(name)
        assert config[f"{prefix}_METRICS_PORT"] == str(_metrics_port(name))
        assert config[f"{prefix}_ADDR"] == f"{name}:{_port(name)}"
        assert svc_ports["metrics"]["port"] == _metrics_port(name)
    if name == "token-service":
        jwks = int(DEV_ENV["TOKEN_SERVICE_JWKS_HTTP_PORT"])
        assert container_port(deployment, "jwks") == jwks
        assert config["TOKEN_SERVICE_JWKS_HTTP_PORT"] == str(jwks)


@pytest.mark.parametrize("target", OVERLAYS)
def test_k8s_config_uses_dev_env_names(target: str) -> None:
    """ConfigMap keys are dev.env names or the launcher-derived ones; every dev.env setting a
    cluster needs reaches the pods (ConfigMap or a Deployment's env)."""
    docs = render(target)
    config = by_kind(docs, "ConfigMap")["xcagw-config"]["data"]
    prefixes = tuple(f"{env_prefix(n)}_" for n in SERVICES)
    for key in config:
        derived = key.endswith(("_ADDR", "_HOST", "_URL", "_FILE", "_KEYS_DIR", "_LOG_LEVEL"))
        assert key in DEV_ENV or (key.startswith(prefixes) and derived), key
    env_names = set(config)
    for dep in by_kind(docs, "Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            env_names |= {e["name"] for e in c.get("env", [])}
    # REDIS_PORT becomes REDIS_URL (a Secret); the sandbox runs in dev only; the local-only
    # insecure dev partner never reaches a cluster (clusters mount a real partner registry).
    local_only = {"REDIS_PORT", "SOAP_EDGE_PARTNERS_FILE", "SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS"}
    expected = {k for k in DEV_ENV if k not in local_only}
    if target != "dev":
        expected = {k for k in expected if not k.startswith("SANDBOX_")}
    assert expected <= env_names, sorted(expected - env_names)


@pytest.mark.parametrize("name", SERVICES)
def test_compose_entry_matches_dev_env(name: str) -> None:
    service = COMPOSE["services"][name]
    env = service["environment"]
    prefix = env_prefix(name)
    assert env[f"{prefix}_PORT"] == str(_port(name))
    assert env[f"{prefix}_HOST"] == "0.0.0.0"  # noqa: S104 - container listeners
    assert env["OTEL_SERVICE_NAME"] == name
    assert service["env_file"] == ["dev.env"]
    for other in GRPC_SERVICES:
        assert env[f"{env_prefix(other)}_ADDR"] == f"{other}:{_port(other)}"
    test = service["healthcheck"]["test"]
    probe = " ".join(test)
    package = name.replace("-", "_")
    if test[:3] == ["CMD", "python", "-m"] and test[3] == "xcagw_common.healthcheck":
        # The shared probe reads `<PREFIX>_PORT` (checked above).
        assert test[4:] == ["--env-prefix", f"{prefix}_"]
    elif test[:3] == ["CMD", "python", "-m"]:
        # The service's own probe module reads `<PREFIX>_PORT` (checked above).
        assert test[3] == f"{package}.healthcheck"
        assert (REPO / "services" / name / "src" / package / "healthcheck.py").exists()
    elif name == "soap-edge":
        assert f"127.0.0.1:{_metrics_port(name)}" in probe
    else:
        assert f"127.0.0.1:{_port(name)}" in probe
    if name == "soap-edge":
        assert "/health/ready" in probe
        published = [p for p in service["ports"] if str(p).endswith(f":{_port(name)}")]
        assert published, service["ports"]
    else:
        assert env[f"{prefix}_METRICS_PORT"] == str(_metrics_port(name))
        assert {str(_port(name)), str(_metrics_port(name))} <= set(service["expose"])
        assert "grpc_health" in probe or "healthcheck" in probe
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    assert service["image"].startswith(f"xcagw/{name}:")


@pytest.mark.parametrize("name", SERVICES)
def test_compose_dependencies_follow_the_launcher_order(name: str) -> None:
    order = list(SERVICE_ORDER)
    for dep, spec in COMPOSE["services"][name].get("depends_on", {}).items():
        assert order.index(dep) < order.index(name), f"{name} depends on later {dep}"
        assert spec["condition"] == "service_healthy", f"{name} -> {dep}"


def test_compose_scrape_targets_match_dev_env() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        targets = [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{_metrics_port(name)}"]
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis-exporter:9121"]
    assert "redis-exporter" in COMPOSE["services"]
