"""Tolerant GP Connect Bundle parsing: entry by entry, raw dicts kept, references resolved softly.

GP Connect Access Record Structured 1.6 / nhs-apis.md section 5: real captures have no fullUrl,
Lists without ids, dangling references, vendor extensions, `fhir_comments`, codes with spaces and
dateTimes without a timezone. None of these may fail a conversion or drop another entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class BundleError(ValueError):
    """The input is not a FHIR Bundle at all (bad JSON, wrong resourceType)."""


@dataclass(slots=True, eq=False)
class Resource:
    """One resource of the bundle (top-level or contained), with its raw JSON."""

    rtype: str
    rid: str
    data: dict[str, Any]
    key: str  # "Type/id", or "Type#<n>" for resources without an id
    position: int
    container: Resource | None = None


@dataclass(slots=True)
class BundleIndex:
    """Resources by type and by reference key, in bundle order (contained ones included)."""

    bundle_id: str
    resources: list[Resource] = field(default_factory=list)
    by_key: dict[str, Resource] = field(default_factory=dict)
    by_full_url: dict[str, Resource] = field(default_factory=dict)
    by_type: dict[str, list[Resource]] = field(default_factory=dict)
    skipped_entries: list[str] = field(default_factory=list)

    def of_type(self, rtype: str) -> list[Resource]:
        return self.by_type.get(rtype, [])

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources)

    def resolve(self, ref: Any, context: Resource | None = None) -> Resource | None:
        """The resource a FHIR Reference (or reference string) points to, or None (dangling)."""
        if isinstance(ref, dict):
            ref = ref.get("reference")
        if not isinstance(ref, str):
            return None
        ref = ref.strip()
        if not ref:
            return None
        if ref.startswith("#"):
            owner = context.container if context and context.container else context
            local = ref[1:]
            if owner is not None:
                for res in self.by_type.get("__contained__", []):
                    if res.container is owner and res.rid == local:
                        return res
            for res in self.by_type.get("__contained__", []):
                if res.rid == local:
                    return res
            return None
        found = self.by_full_url.get(ref)
        if found is not None:
            return found
        found = self.by_key.get(ref)
        if found is not None:
            return found
        parts = ref.rstrip("/").split("/")
        if len(parts) >= 2:
            # Absolute URLs and versioned references: .../Type/id or Type/id/_history/n.
            if len(parts) >= 4 and parts[-2] == "_history":
                parts = parts[:-2]
            return self.by_key.get(parts[-2] + "/" + parts[-1])
        return None

    def ref_type(self, ref: Any) -> str:
        """The resource type named by a reference string, even when it is dangling."""
        if isinstance(ref, dict):
            ref = ref.get("reference")
        if isinstance(ref, str) and "/" in ref:
            parts = ref.strip().rstrip("/").split("/")
            if len(parts) >= 4 and parts[-2] == "_history":
                return parts[-4]
            return parts[-2]
        return ""


def load(bundle: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """The bundle as a dict; raises BundleError with a clear message for non-bundles."""
    if isinstance(bundle, (bytes, bytearray, str)):
        try:
            data = json.loads(bundle)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle is not valid JSON: {exc}") from None
    else:
        data = bundle
    if not isinstance(data, dict):
        raise BundleError("bundle JSON must be an object")
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        if rtype == "OperationOutcome":
            raise BundleError("expected a FHIR Bundle, got an OperationOutcome (an error response)")
        raise BundleError(f"expected a FHIR Bundle, got resourceType {rtype!r}")
    entries = data.get("entry", [])
    if entries is not None and not isinstance(entries, list):
        raise BundleError("Bundle.entry must be an array")
    return data


def index(data: dict[str, Any]) -> BundleIndex:
    """Index every entry independently; an odd entry is recorded and skipped, never fatal."""
    bundle_id = data.get("id") if isinstance(data.get("id"), str) else ""
    idx = BundleIndex(bundle_id=bundle_id or "")
    entries = data.get("entry") or []
    anon = 0
    for pos, entry in enumerate(entries):
        if not isinstance(entry, dict):
            idx.skipped_entries.append(f"entry {pos}: not a JSON object")
            continue
        res = entry.get("resource")
        if res is None and isinstance(entry.get("resourceType"), str):
            # Hand-written examples put the resource directly in the entry.
            res = entry
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            idx.skipped_entries.append(f"entry {pos}: no resource with a resourceType")
            continue
        rtype = res["resourceType"].strip()
        rid = res.get("id")
        rid = rid.strip() if isinstance(rid, str) else ""
        if rid:
            key = f"{rtype}/{rid}"
            if key in idx.by_key:
                anon += 1
                key = f"{rtype}#{anon}"
        else:
            anon += 1
            key = f"{rtype}#{anon}"
        item = Resource(rtype, rid, res, key, pos)
        _add(idx, item)
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url.strip():
            idx.by_full_url.setdefault(full_url.strip(), item)
        contained = res.get("contained")
        if isinstance(contained, list):
            for inner in contained:
                if not isinstance(inner, dict) or not isinstance(inner.get("resourceType"), str):
                    idx.skipped_entries.append(f"entry {pos}: contained item without resourceType")
                    continue
                crtype = inner["resourceType"].strip()
                cid = inner.get("id")
                cid = cid.strip() if isinstance(cid, str) else ""
                anon += 1
                ckey = f"{crtype}/{cid}" if cid and f"{crtype}/{cid}" not in idx.by_key else ""
                citem = Resource(crtype, cid, inner, ckey or f"{crtype}#{anon}", pos, item)
                _add(idx, citem)
                idx.by_type.setdefault("__contained__", []).append(citem)
    return idx


def _add(idx: BundleIndex, item: Resource) -> None:
    idx.resources.append(item)
    if "/" in item.key:
        idx.by_key[item.key] = item
    idx.by_type.setdefault(item.rtype, []).append(item)


def extensions(data: dict[str, Any], url_suffix: str) -> list[dict[str, Any]]:
    """Extensions whose url ends with ``url_suffix``.

    Vendors vary the base (fhir.nhs.uk vs fhir.hl7.org.uk), so only the suffix is compared."""
    raw = data.get("extension")
    if not raw or not isinstance(raw, list):
        return []
    return [
        ext
        for ext in raw
        if isinstance(ext, dict)
        and isinstance(url := ext.get("url"), str)
        and url.strip().endswith(url_suffix)
    ]


def extension(data: dict[str, Any], url_suffix: str) -> dict[str, Any] | None:
    found = extensions(data, url_suffix)
    return found[0] if found else None


def sub_extension(ext: dict[str, Any] | None, url: str) -> dict[str, Any] | None:
    """A nested extension by its (relative) url."""
    if not isinstance(ext, dict):
        return None
    raw = ext.get("extension")
    if isinstance(raw, list):
        for inner in raw:
            if isinstance(inner, dict) and inner.get("url") == url:
                return inner
    return None


def ext_value(ext: dict[str, Any] | None) -> Any:
    """The value[x] of an extension."""
    if not isinstance(ext, dict):
        return None
    for k, v in ext.items():
        if k.startswith("value"):
            return v
    return None


def as_list(value: Any) -> list[Any]:
    """A FHIR repeating element as a list (hand-written data sometimes has a single object)."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def text_of(value: Any) -> str:
    """A string field, stripped, or ''."""
    return value.strip() if isinstance(value, str) else ""


def notes(data: dict[str, Any]) -> list[str]:
    """Annotation texts."""
    out = []
    for n in as_list(data.get("note")):
        if isinstance(n, dict):
            t = text_of(n.get("text"))
            if t:
                out.append(t)
        elif isinstance(n, str) and n.strip():
            out.append(n.strip())
    return out


def obj(value: Any) -> dict[str, Any]:
    """A JSON object field as a dict ({} for absent or malformed values)."""
    return value if isinstance(value, dict) else {}
