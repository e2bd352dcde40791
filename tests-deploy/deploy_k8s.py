"""Kubernetes helpers for tests-deploy: render overlays, find objects, evaluate NetworkPolicies."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from deploy_tools import DEPLOY

K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")

Manifest = dict[str, Any]


@cache
def renderer() -> ModuleType:
    """deploy/k8s/render.py (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("xcagw_k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is being built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def render(target: str) -> list[Manifest]:
    """`base` or an overlay name -> its rendered objects (fresh copies)."""
    path = K8S / "base" if target == "base" else K8S / "overlays" / target
    docs: list[Manifest] = renderer().render(path)
    return docs


def by_kind(docs: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: Manifest, name: str | None = None) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    wanted = name or deployment["metadata"]["name"]
    return next(c for c in containers if c["name"] == wanted)


def container_port(deployment: Manifest, port_name: str) -> int:
    ports = container(deployment)["ports"]
    return int(next(p["containerPort"] for p in ports if p["name"] == port_name))


# ---- NetworkPolicy evaluation (one namespace; the subset of the API used in deploy/k8s) -------


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True)
class Peer:
    """The other end of a connection: a pod of this namespace (labels) or an external address."""

    labels: dict[str, str] | None = None
    ip: str | None = None
    namespace_labels: dict[str, str] | None = None


def _peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = rule_peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if "namespaceSelector" in rule_peer:
        if peer.namespace_labels is None:
            return False
        if not selector_matches(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
        return selector_matches(rule_peer.get("podSelector", {}), peer.labels or {})
    if "podSelector" in rule_peer:
        # Same-namespace pods only.
        if peer.labels is None or peer.namespace_labels is not None:
            return False
        return selector_matches(rule_peer["podSelector"], peer.labels)
    return False


def _port_matches(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(int(p["port"]) == port for p in ports)


def _allowed(
    policies: Iterable[Manifest],
    pod: dict[str, str],
    peer: Peer,
    port: int,
    direction: str,
) -> bool:
    field = "ingress" if direction == "Ingress" else "egress"
    peer_key = "from" if direction == "Ingress" else "to"
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(field, []):
            peers = rule.get(peer_key)
            if _port_matches(rule, port) and (
                not peers or any(_peer_matches(x, peer) for x in peers)
            ):
                return True
    return False


def connection_allowed(
    docs: Iterable[Manifest], src: dict[str, str], dst: dict[str, str], port: int
) -> bool:
    """Pod -> pod in the namespace: the source's egress and the destination's ingress both allow."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    return _allowed(policies, src, Peer(labels=dst), port, "Egress") and _allowed(
        policies, dst, Peer(labels=src), port, "Ingress"
    )


def egress_allowed(docs: Iterable[Manifest], src: dict[str, str], ip: str, port: int) -> bool:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    return _allowed(policies, src, Peer(ip=ip), port, "Egress")


def pod_labels(docs: Iterable[Manifest], deployment: str) -> dict[str, str]:
    labels: dict[str, str] = by_kind(docs, "Deployment")[deployment]["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels
