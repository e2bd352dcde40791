"""Redis keys, TTLs and the patient read cache: the one place pds-adapter's Redis usage is defined.

| Key | Value | TTL |
|---|---|---|
| `xcagw:pds:patient:v1:<nhs>` | PDS `GET /Patient/<nhs>` body | cache_ttl_seconds (60s) |
| `xcagw:ratelimit:pds` | GCRA arrival time, microseconds (resilience.py) | 1/rate + 1 s |

The key holds the requested number, which is how a superseded number keeps resolving to its
successor within the TTL. Only successful reads of unrestricted (`U`) records are stored: never an
error, never a restricted record (nhs-apis.md §1.6). A Redis failure never fails a read: it counts
as a miss (`xcagw_cache_requests_total{cache="pds_patient",result="error"}`) and PDS is asked.

The key is per patient, not per requesting organisation, on purpose: NHSD-End-User-Organisation-ODS
(the requesting organisation's ODS code, nhs-apis.md §1.3) tells PDS who asks, it does not change
PDS's answer, so a read made for one partner may serve another. Each caller's access is still
logged under its own ids by the servicer.
"""

from __future__ import annotations

import logging
from typing import Any

from xcagw_common.metrics import CACHE_REQUESTS

log = logging.getLogger(__name__)

CACHE_NAME = "pds_patient"
PATIENT_KEY_PREFIX = "xcagw:pds:patient:v1:"
RATE_LIMIT_NAME = "pds"  # -> key xcagw:ratelimit:pds (RedisRateLimiter's default prefix)


def patient_key(nhs_number: str) -> str:
    """Cache key of the PDS read of `nhs_number` (already validated and normalised)."""
    return f"{PATIENT_KEY_PREFIX}{nhs_number}"


class PatientCache:
    """Short-lived cache of PDS patient reads (raw JSON text)."""

    def __init__(self, redis: Any, ttl_seconds: int) -> None:
        self._redis = redis
        self.ttl_seconds = ttl_seconds

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    async def get(self, nhs_number: str) -> str | None:
        """The cached PDS body for `nhs_number`, or None (miss, disabled or Redis error)."""
        if not self.enabled:
            return None
        try:
            value = await self._redis.get(patient_key(nhs_number))
        except Exception as exc:  # noqa: BLE001 - a cache must never fail the read
            CACHE_REQUESTS.labels(CACHE_NAME, "error").inc()
            log.warning("patient cache read failed: %s", type(exc).__name__)
            return None
        if value is None:
            CACHE_REQUESTS.labels(CACHE_NAME, "miss").inc()
            return None
        CACHE_REQUESTS.labels(CACHE_NAME, "hit").inc()
        return value.decode() if isinstance(value, bytes) else str(value)

    async def put(self, nhs_number: str, fhir_json: str) -> None:
        """Store an unrestricted record's PDS body; the caller has checked it may be cached."""
        if not self.enabled:
            return
        try:
            await self._redis.set(patient_key(nhs_number), fhir_json, ex=self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001 - a cache must never fail the read
            log.warning("patient cache write failed: %s", type(exc).__name__)
