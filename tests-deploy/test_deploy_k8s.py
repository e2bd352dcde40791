"""deploy/k8s: overlays render, pass kubernetes-validate --strict, and have the security,
probe, scaling and network properties issue #10 asks for."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_k8s import (
    K8S,
    OVERLAYS,
    by_kind,
    connection_allowed,
    container,
    container_port,
    egress_allowed,
    pod_labels,
    pod_spec,
    render,
    renderer,
)
from deploy_tools import run

from xcagw_common.grpc_server import LIVENESS_SERVICE
from xcagw_devstack.launcher import GRPC_SERVICES

SERVICES = (*GRPC_SERVICES, "soap-edge")
ADAPTERS = ("pds-adapter", "gpconnect-adapter", "ccda-converter")
NHS_FACING = ("token-service", "pds-adapter", "gpconnect-adapter", "ccda-converter")
K8S_VERSION = "1.30.0"


def test_rendered_manifests_pass_kubernetes_validate_strict(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    """Every object of base, dev and prod, in one run (the schema loading dominates)."""
    files = []
    for target in ("base", *OVERLAYS):
        path = tmp_path / f"{target}.yaml"
        path.write_text(renderer().dump(render(target)))
        files.append(str(path))
    result = run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, *files])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    objects = sum(len(render(t)) for t in ("base", *OVERLAYS))
    assert output.count("passed") == objects, output


def _normalised(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Objects keyed by kind/name with lists sorted, so merge order does not matter."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [norm(v) for v in value]
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return value

    return {(d["kind"], d["metadata"]["name"]): json.dumps(norm(d), sort_keys=True) for d in docs}


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_python_renderer_agrees_with_kubectl_kustomize(target: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (optional cross-check of deploy/k8s/render.py)")
    path = K8S / "base" if target == "base" else K8S / "overlays" / target
    result = run([kubectl, "kustomize", str(path)])
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert _normalised(render(target)) == _normalised(theirs)


def test_renderer_merges_like_a_strategic_merge_patch() -> None:
    merge = renderer().strategic_merge
    base: dict[str, Any] = {
        "spec": {
            "containers": [
                {"name": "a", "env": [{"name": "X", "value": "1"}], "image": "i:1"},
                {"name": "b", "image": "j:1"},
            ],
            "volumes": [{"name": "keys", "secret": {"secretName": "s"}}],
            "args": ["--x"],
        }
    }
    patch = {
        "spec": {
            "containers": [
                {"name": "a", "env": [{"name": "Y", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
            ],
            "volumes": [{"name": "keys", "secret": None, "emptyDir": {}}],
            "args": ["--y"],
        }
    }
    merged = merge(base, patch)
    assert merged["spec"]["containers"] == [
        {
            "name": "a",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
            "image": "i:1",
        }
    ]
    assert merged["spec"]["volumes"] == [{"name": "keys", "emptyDir": {}}]
    assert merged["spec"]["args"] == ["--y"]
    assert base["spec"]["volumes"][0]["secret"] == {"secretName": "s"}


def test_renderer_rejects_what_it_does_not_implement(tmp_path: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(renderer().RenderError, match="unsupported"):
        renderer().render(tmp_path)


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_workload_is_locked_down(target: str) -> None:
    docs = render(target)
    deployments = by_kind(docs, "Deployment")
    assert set(SERVICES) <= set(deployments)
    for name, dep in deployments.items():
        pod = pod_spec(dep)
        assert pod.get("automountServiceAccountToken") is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["runAsNonRoot"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"], name
            assert c.get("readinessProbe") and c.get("livenessProbe"), name
            if target == "prod":
                assert not c["image"].endswith(":latest"), f"{name}: pin the image tag"


@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_are_native_grpc_and_http_for_soap_edge(target: str) -> None:
    deployments = by_kind(render(target), "Deployment")
    for name in GRPC_SERVICES:
        c = container(deployments[name])
        port = container_port(deployments[name], "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name} {probe}"
        # Startup and liveness ask the dependency-free `liveness` status: a Redis or backend
        # outage must never restart the pods (CrashLoopBackOff, lost in-process tokens).
        # Readiness asks the overall status ("" = no `service` key), which follows dependencies.
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["grpc"].get("service") == LIVENESS_SERVICE, f"{name} {probe}"
        assert "service" not in c["readinessProbe"]["grpc"], name
    edge = container(deployments["soap-edge"])
    assert edge["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert edge["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert edge["startupProbe"]["httpGet"]["path"] == "/health/live"
    # The same rule for any gRPC probe of any workload, including ones added later.
    for name, dep in deployments.items():
        for c in pod_spec(dep)["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                grpc_probe = c.get(probe, {}).get("grpc")
                if grpc_probe is None:
                    continue
                restarts = probe != "readinessProbe"
                assert (grpc_probe.get("service") == LIVENESS_SERVICE) is restarts, (
                    f"{name}/{c['name']} {probe}"
                )


@pytest.mark.parametrize("target", OVERLAYS)
def test_hpas_pdbs_and_scrape_annotations(target: str) -> None:
    docs = render(target)
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"soap-edge", "ccda-converter"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert deployments[name]["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name in SERVICES:
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(docs, name).items()
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"


@pytest.mark.parametrize("target", OVERLAYS)
def test_network_policies_only_soap_edge_reaches_the_adapters(target: str) -> None:
    docs = render(target)
    labels = {name: pod_labels(docs, name) for name in SERVICES}
    ports = {
        name: container_port(by_kind(docs, "Deployment")[name], "grpc") for name in GRPC_SERVICES
    }
    assert "default-deny-all" in by_kind(docs, "NetworkPolicy")
    for adapter in ADAPTERS:
        assert connection_allowed(docs, labels["soap-edge"], labels[adapter], ports[adapter])
        for other in set(SERVICES) - {"soap-edge", adapter}:
            allowed = connection_allowed(docs, labels[other], labels[adapter], ports[adapter])
            # gpconnect-adapter resolves the patient through pds-adapter (PDS_ADAPTER_ADDR).
            expected = (other, adapter) == ("gpconnect-adapter", "pds-adapter")
            assert allowed is expected, f"{other} -> {adapter}"
    # token-service: its callers only; the converter never asks for tokens.
    for caller in ("soap-edge", "pds-adapter", "gpconnect-adapter"):
        assert connection_allowed(docs, labels[caller], labels["token-service"], 50051)
    assert not connection_allowed(docs, labels["ccda-converter"], labels["token-service"], 50051)
    # Nothing reaches a service on a port it does not serve.
    assert not connection_allowed(docs, labels["soap-edge"], labels["pds-adapter"], 22)


@pytest.mark.parametrize("target", OVERLAYS)
def test_network_policies_only_nhs_facing_services_reach_the_internet(target: str) -> None:
    docs = render(target)
    nhs_api = "203.0.113.10"  # TEST-NET-3: stands for an NHS API address
    for name in SERVICES:
        allowed = egress_allowed(docs, pod_labels(docs, name), nhs_api, 443)
        assert allowed is (name in NHS_FACING), name
        assert not egress_allowed(docs, pod_labels(docs, name), nhs_api, 80), name
    # The Internet rule never opens cluster-internal addresses.
    assert not egress_allowed(docs, pod_labels(docs, "pds-adapter"), "10.1.2.3", 443)


@pytest.mark.parametrize("target", OVERLAYS)
def test_keys_and_certificates_are_secret_files_and_no_secret_is_committed(target: str) -> None:
    docs = render(target)
    deployments = by_kind(docs, "Deployment")
    config = by_kind(docs, "ConfigMap")["xcagw-config"]["data"]

    def mounted_secret(dep: str, volume: str) -> tuple[str | None, str]:
        pod = pod_spec(deployments[dep])
        vol = next(v for v in pod["volumes"] if v["name"] == volume)
        mount = next(m for m in container(deployments[dep])["volumeMounts"] if m["name"] == volume)
        return vol.get("secret", {}).get("secretName"), mount["mountPath"]

    ssp_secret, ssp_path = mounted_secret("gpconnect-adapter", "ssp-tls")
    assert ssp_secret == "gpconnect-ssp-tls"
    keys_secret, keys_path = mounted_secret("token-service", "signing-keys")
    assert config["TOKEN_SERVICE_KEYS_DIR"] == keys_path
    if target == "prod":
        assert keys_secret == "token-service-signing-keys"
        assert config["TOKEN_SERVICE_AUTO_GENERATE_KEY"] == "false"
        for key in ("CERT", "KEY", "CA"):
            assert config[
                f"GPCONNECT_ADAPTER_SSP_CLIENT_{key}_FILE".replace("CLIENT_CA", "CA")
            ].startswith(ssp_path)
        assert by_kind(docs, "Secret") == {}, "production secrets come from the secret manager"
    # Secret values reach the services by reference only, never as literal env values.
    for name in SERVICES:
        env = {e["name"]: e for e in container(deployments[name])["env"]}
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "xcagw-redis"
        assert env["XCAGW_LOG_PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"]
        for var in env.values():
            if any(word in var["name"] for word in ("KEY", "SECRET", "PASSWORD", "TOKEN")):
                assert "value" not in var, f"{name}: {var['name']} must come from a Secret"
    for key in config:
        assert not key.endswith(("API_KEY", "PASSWORD", "SECRET")), key
