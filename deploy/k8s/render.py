"""Render a kustomize-style overlay to plain manifests, in Python (no kubectl/kustomize needed).

Supports the subset of kustomization.yaml this repo uses, with kustomize's semantics:
`resources` (files or directories holding a kustomization.yaml), `namespace`, `labels`
(`pairs`, `includeTemplates`), `images` (`name`, `newName`, `newTag`), `replicas`
(`name`, `count`) and `patches` (`path` or inline `patch`, strategic-merge only, matched by
kind + metadata.name, or by an explicit `target`). Anything else is rejected, so a
kustomization that `kubectl kustomize` would read differently fails loudly here.

    python deploy/k8s/render.py deploy/k8s/overlays/dev > dev.yaml
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "replicas",
    "patches",
}
# Kinds that are not namespaced (kustomize leaves their metadata.namespace alone).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
# Strategic merge patch keys of the list fields used here (Kubernetes API patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "envFrom": None,
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


def load_yaml_documents(path: Path) -> list[Manifest]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise RenderError(f"{path}: every document must be a Kubernetes object")
    return docs


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge `patch` into `base` like a strategic merge patch (null deletes a key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged and isinstance(value, list) and isinstance(merged[key], list):
                merged[key] = _merge_list(key, merged[key], value)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _merge_list(field: str, base: list[Any], patch: list[Any]) -> list[Any]:
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(i, dict) and key in i for i in [*base, *patch]):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(i) for i in base]
    index = {item[key]: n for n, item in enumerate(merged)}
    for item in patch:
        if item.get("$patch") == "delete":
            if item[key] in index:
                merged = [m for m in merged if m[key] != item[key]]
                index = {m[key]: n for n, m in enumerate(merged)}
            continue
        if item[key] in index:
            merged[index[item[key]]] = strategic_merge(merged[index[item[key]]], item)
        else:
            index[item[key]] = len(merged)
            merged.append(copy.deepcopy(item))
    return merged


def _matches(doc: Manifest, target: dict[str, Any]) -> bool:
    meta = doc.get("metadata", {})
    if "kind" in target and doc.get("kind") != target["kind"]:
        return False
    if "name" in target and meta.get("name") != target["name"]:
        return False
    return True


def _pod_templates(doc: Manifest) -> Iterable[dict[str, Any]]:
    if doc.get("kind") not in WORKLOAD_KINDS:
        return []
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return [template] if isinstance(template, dict) else []


def _set_images(docs: list[Manifest], images: list[dict[str, str]]) -> None:
    for doc in docs:
        for template in _pod_templates(doc):
            pod = template.get("spec", {})
            for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
                image = str(container.get("image", ""))
                name, _, _tag = image.partition(":")
                for rule in images:
                    if rule["name"] == name:
                        new_name = rule.get("newName", name)
                        new_tag = rule.get("newTag", _tag or "latest")
                        container["image"] = f"{new_name}:{new_tag}"


def _add_labels(docs: list[Manifest], label_spec: dict[str, Any]) -> None:
    if label_spec.get("includeSelectors"):
        raise RenderError("labels.includeSelectors: true is not supported (immutable selectors)")
    pairs = label_spec.get("pairs", {})
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label_spec.get("includeTemplates"):
            for template in _pod_templates(doc):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def render(directory: Path) -> list[Manifest]:
    """Every object of the kustomization in `directory`, transformed, in resource order."""
    directory = directory.resolve()
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{kfile}: unsupported fields {sorted(unknown)}")

    docs: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs.extend(render(path))
        elif path.is_file():
            docs.extend(load_yaml_documents(path))
        else:
            raise RenderError(f"{kfile}: resource {entry} not found")

    for patch_spec in spec.get("patches", []):
        if "path" in patch_spec:
            patch_docs = load_yaml_documents(directory / patch_spec["path"])
        elif "patch" in patch_spec:
            patch_docs = [yaml.safe_load(patch_spec["patch"])]
        else:
            raise RenderError(f"{kfile}: a patch needs `path` or `patch`")
        for patch in patch_docs:
            if isinstance(patch, list):
                raise RenderError(f"{kfile}: JSON6902 patches are not supported")
            target = patch_spec.get("target") or {
                "kind": patch["kind"],
                "name": patch["metadata"]["name"],
            }
            indexes = [n for n, doc in enumerate(docs) if _matches(doc, target)]
            if not indexes:
                raise RenderError(f"{kfile}: patch target {target} matches nothing")
            for n in indexes:
                body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
                body["metadata"] = {
                    k: v for k, v in patch.get("metadata", {}).items() if k != "name"
                }
                docs[n] = strategic_merge(docs[n], body)

    for rule in spec.get("replicas", []):
        workloads = [
            d
            for d in docs
            if d.get("metadata", {}).get("name") == rule["name"]
            and d.get("kind") in WORKLOAD_KINDS - {"DaemonSet"}
        ]
        if not workloads:
            raise RenderError(f"{kfile}: replicas for unknown workload {rule['name']}")
        for doc in workloads:
            doc.setdefault("spec", {})["replicas"] = int(rule["count"])

    if spec.get("images"):
        _set_images(docs, spec["images"])

    for label_spec in spec.get("labels", []):
        _add_labels(docs, label_spec)

    if spec.get("namespace"):
        for doc in docs:
            if doc.get("kind") not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = spec["namespace"]

    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        meta = doc.get("metadata", {})
        ident = (doc["kind"], str(meta.get("namespace", "")), str(meta.get("name", "")))
        if ident in seen:
            raise RenderError(f"{kfile}: duplicate object {ident}")
        seen.add(ident)
    return docs


def dump(docs: list[Manifest]) -> str:
    return str(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="a folder with a kustomization.yaml")
    ns = parser.parse_args(argv)
    try:
        sys.stdout.write(dump(render(ns.directory)))
    except RenderError as exc:
        sys.stderr.write(f"render: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
