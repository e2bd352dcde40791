"""Optional dm+d enrichment through the NHS Terminology Server (FHIR R4 CodeSystem/$lookup).

For each dm+d code of the record: display, concept class, the VMP of an AMP, route and strength.
Results are cached in Redis (successes only: Xhuma cached failed lookups for 7 days). A slow or
down terminology server or Redis never fails a conversion: the lookup returns what it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import httpx

from ccda_converter.bundle import as_list
from ccda_converter.codes import first_snomed
from ccda_converter.model import DmdConcept

log = logging.getLogger(__name__)

DMD_SYSTEM = "https://dmd.nhs.uk"
CACHE_PREFIX = "ccda:dmd:v1:"


def medication_codes(bundle: dict[str, Any]) -> set[str]:
    """The dm+d/SNOMED codes of every Medication (and inline medication concept) in a bundle."""
    codes: set[str] = set()
    for entry in as_list(bundle.get("entry")):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        rtype = res.get("resourceType")
        if rtype == "Medication":
            code = first_snomed(res.get("code"))
        elif rtype in ("MedicationStatement", "MedicationRequest"):
            code = first_snomed(res.get("medicationCodeableConcept"))
        else:
            continue
        if code.isdigit():
            codes.add(code)
    return codes


def parse_lookup(code: str, body: dict[str, Any]) -> DmdConcept:
    """A FHIR Parameters $lookup response -> DmdConcept (tolerant of property naming)."""
    display = ""
    props: dict[str, Any] = {}
    for param in as_list(body.get("parameter")):
        if not isinstance(param, dict):
            continue
        name = param.get("name")
        if name == "display":
            display = str(param.get("valueString") or "")
        elif name == "property":
            prop_code = ""
            value: Any = None
            for part in as_list(param.get("part")):
                if not isinstance(part, dict):
                    continue
                if part.get("name") == "code":
                    prop_code = str(part.get("valueCode") or part.get("valueString") or "")
                elif part.get("name") in ("value", "valueCoding"):
                    value = next((v for k, v in part.items() if k.startswith("value")), None)
            if prop_code:
                props.setdefault(prop_code.lower(), value)

    def coding(*names: str) -> tuple[str, str]:
        for n in names:
            v = props.get(n)
            if isinstance(v, dict):
                return str(v.get("code") or ""), str(v.get("display") or "")
            if isinstance(v, str) and v:
                return v, ""
        return "", ""

    def text(*names: str) -> str:
        for n in names:
            v = props.get(n)
            if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                return str(v)
            if isinstance(v, dict) and v.get("display"):
                return str(v["display"])
        return ""

    vmp_code, vmp_display = coding("vmp", "parent", "is_a_vmp", "vpid")
    route_code, route_display = coding("route", "routecd", "ontformroute")
    return DmdConcept(
        code=code,
        display=display,
        concept_class=text("concept_class", "class", "conceptclass", "dmdclass").upper(),
        vmp_code=vmp_code,
        vmp_display=vmp_display,
        route_code=route_code,
        route_display=route_display,
        strength=text("strength", "strength_text", "vpi", "strnt_nmrtr_val"),
    )


class DmdEnricher:
    """Looks dm+d codes up on a FHIR terminology server, with a Redis cache in front."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient,
        redis: Any | None = None,
        ttl_seconds: int = 7 * 24 * 3600,
        timeout_seconds: float = 2.0,
        concurrency: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.timeout_seconds = timeout_seconds
        self._semaphore = asyncio.Semaphore(concurrency)

    async def lookup(self, codes: Iterable[str]) -> dict[str, DmdConcept]:
        """Lookups for ``codes``; missing ones are simply absent (never raises)."""
        wanted = sorted({c for c in codes if c})
        if not wanted or not self.base_url:
            return {}
        found = await self._from_cache(wanted)
        missing = [c for c in wanted if c not in found]
        if missing:
            results = await self._fetch_all(missing)
            fresh = {r.code: r for r in results if r is not None}
            found.update(fresh)
            await self._to_cache(fresh)
        return found

    async def _fetch_all(self, codes: list[str]) -> list[DmdConcept | None]:
        """The lookups that finish within the overall budget; the rest are cancelled.

        asyncio.wait, not gather under a timeout: a timeout around gather cancels every lookup
        and loses the ones that had already answered.
        """
        tasks = [asyncio.create_task(self._fetch(c)) for c in codes]
        try:
            done, pending = await asyncio.wait(tasks, timeout=self.timeout_seconds)
        finally:
            # Also when this request itself is cancelled: never leave lookups running behind it.
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning(
                "dm+d lookups timed out: %d of %d converted without enrichment",
                len(pending),
                len(tasks),
            )
        results: list[DmdConcept | None] = []
        for task in done:
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                # A lookup never fails the conversion (module docstring); the code goes unenriched.
                log.warning("dm+d lookup failed: %s", type(exc).__name__)
                continue
            results.append(task.result())
        return results

    async def _from_cache(self, codes: list[str]) -> dict[str, DmdConcept]:
        if self.redis is None:
            return {}
        try:
            # GETs in one pipeline, not MGET: in a Redis Cluster the codes' keys are in
            # different slots (CROSSSLOT for MGET); the cluster client splits the pipeline per
            # node, and against one server it is one round trip like MGET.
            pipe = self.redis.pipeline(transaction=False)
            for code in codes:
                pipe.get(CACHE_PREFIX + code)
            values = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a cache outage only costs lookups
            log.warning("dm+d cache unavailable: %s", type(exc).__name__)
            return {}
        out = {}
        for code, raw in zip(codes, values, strict=True):
            if raw:
                try:
                    out[code] = DmdConcept(**json.loads(raw))
                except (ValueError, TypeError):
                    continue
        return out

    async def _to_cache(self, fresh: dict[str, DmdConcept]) -> None:
        if self.redis is None or not fresh:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for code, value in fresh.items():
                pipe.set(CACHE_PREFIX + code, json.dumps(_as_dict(value)), ex=self.ttl_seconds)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            log.warning("dm+d cache write failed: %s", type(exc).__name__)

    async def _fetch(self, code: str) -> DmdConcept | None:
        url = f"{self.base_url}/CodeSystem/$lookup"
        async with self._semaphore:
            try:
                resp = await self.http.get(url, params={"system": DMD_SYSTEM, "code": code})
            except httpx.HTTPError as exc:
                log.warning("dm+d lookup failed: %s", type(exc).__name__)
                return None
        if resp.status_code != 200:
            # Not cached: a 404 today may be a 200 after the next dm+d release or an outage fix.
            return None
        try:
            body = resp.json()
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            return None
        return parse_lookup(code, body)


def _as_dict(value: DmdConcept) -> dict[str, str]:
    return {
        "code": value.code,
        "display": value.display,
        "concept_class": value.concept_class,
        "vmp_code": value.vmp_code,
        "vmp_display": value.vmp_display,
        "route_code": value.route_code,
        "route_display": value.route_display,
        "strength": value.strength,
    }
