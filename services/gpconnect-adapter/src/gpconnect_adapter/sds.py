"""SDS FHIR lookup of a GP practice's Access Record Structured endpoint, cached in Redis.

nhs-apis.md section 3.1 (SDS FHIR API): `GET Device?organization=<ODS>&identifier=<interaction>`
gives the provider ASID and MHS party key; `GET Endpoint?...&identifier=<party key>` gives the
FHIR service root (`Endpoint.address`). Zero and several matches are handled explicitly.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import httpx

from gpconnect_adapter.config import Settings
from gpconnect_adapter.outcomes import RETRY_AFTER_STATUSES, AdapterError
from xcagw_common.headers import safe_header_value
from xcagw_common.metrics import CACHE_REQUESTS, UPSTREAM_LATENCY
from xcagw_common.ods import is_ods_code
from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Deadline,
    DeadlineExceededError,
    RetryPolicy,
    parse_retry_after,
    retry_http,
)
from xcagw_common.singleflight import SingleFlight

log = logging.getLogger(__name__)

STRUCTURED_INTERACTION = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION_SYSTEM = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
ASID_SYSTEM = "https://fhir.nhs.uk/Id/nhsSpineASID"
PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
CACHE_NAME = "sds_endpoint"
_CACHE_KEY_PREFIX = "xcagw:gpconnect:sds-endpoint:v1:"


@dataclass(frozen=True)
class ProviderEndpoint:
    """The GP Connect structured-record endpoint of one practice."""

    ods_code: str
    asid: str
    party_key: str
    address: str


def normalise_ods(value: str) -> str:
    """Upper-cased, trimmed ODS code; INVALID_ARGUMENT when it cannot be one."""
    ods = value.strip().upper()
    if not is_ods_code(ods):
        raise AdapterError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ODS_CODE",
            "ods_code must be 3-10 letters or digits",
        )
    return ods


class EndpointCache:
    """SDS results in Redis for `ttl` seconds. Redis failures degrade to a miss, never an error."""

    def __init__(self, redis: Any, ttl_seconds: int) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    @staticmethod
    def key(ods_code: str) -> str:
        return _CACHE_KEY_PREFIX + ods_code

    async def get(self, ods_code: str) -> ProviderEndpoint | None:
        if self._ttl <= 0:
            return None
        try:
            raw = await self._redis.get(self.key(ods_code))
        except Exception as exc:  # noqa: BLE001 - a cache outage must not fail the lookup
            log.warning("SDS endpoint cache read failed: %s", type(exc).__name__)
            CACHE_REQUESTS.labels(CACHE_NAME, "error").inc()
            return None
        if raw is None:
            CACHE_REQUESTS.labels(CACHE_NAME, "miss").inc()
            return None
        try:
            data = json.loads(raw)
            endpoint = ProviderEndpoint(
                ods_code=ods_code,
                asid=str(data["asid"]),
                party_key=str(data["party_key"]),
                address=str(data["address"]),
            )
        except (ValueError, KeyError, TypeError):
            CACHE_REQUESTS.labels(CACHE_NAME, "miss").inc()
            return None
        CACHE_REQUESTS.labels(CACHE_NAME, "hit").inc()
        return endpoint

    async def put(self, endpoint: ProviderEndpoint) -> None:
        if self._ttl <= 0:
            return
        value = json.dumps({k: v for k, v in asdict(endpoint).items() if k != "ods_code"})
        try:
            await self._redis.set(self.key(endpoint.ods_code), value, ex=self._ttl)
        except Exception as exc:  # noqa: BLE001 - next lookup simply asks SDS again
            log.warning("SDS endpoint cache write failed: %s", type(exc).__name__)

    async def invalidate(self, ods_code: str) -> None:
        try:
            await self._redis.delete(self.key(ods_code))
        except Exception as exc:  # noqa: BLE001
            log.warning("SDS endpoint cache delete failed: %s", type(exc).__name__)


def _identifier(resource: dict[str, Any], system: str) -> str:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list):
        for ident in identifiers:
            if isinstance(ident, dict) and ident.get("system") == system:
                value = ident.get("value")
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return ""


def _resources(bundle: Any, resource_type: str) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise AdapterError(
            grpc.StatusCode.UNAVAILABLE,
            "SDS_INVALID_RESPONSE",
            f"SDS {resource_type} search did not return a Bundle",
        )
    found: list[dict[str, Any]] = []
    entries = bundle.get("entry")
    if isinstance(entries, list):
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                found.append(resource)
    return found


def select_device(bundle: Any, ods_code: str) -> tuple[str, str]:
    """(ASID, party key) of the one Device for the practice and interaction."""
    candidates = set()
    for device in _resources(bundle, "Device"):
        asid = _identifier(device, ASID_SYSTEM)
        party_key = _identifier(device, PARTY_KEY_SYSTEM)
        if asid and party_key:
            candidates.add((asid, party_key))
    if not candidates:
        raise AdapterError(
            grpc.StatusCode.NOT_FOUND,
            "SDS_NOT_FOUND",
            f"SDS has no GP Connect structured-record Device for ODS {ods_code}",
            {"ods_code": ods_code, "sds_resource": "Device"},
        )
    if len(candidates) > 1:
        # Several distinct systems claim the interaction for this practice: picking one would
        # be a guess about where the patient's record is (Xhuma silently took entry[0]).
        raise AdapterError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "SDS_AMBIGUOUS",
            f"SDS returned {len(candidates)} different Devices for ODS {ods_code}",
            {"ods_code": ods_code, "sds_resource": "Device"},
        )
    return next(iter(candidates))


def select_address(bundle: Any, ods_code: str) -> str:
    """`Endpoint.address` of the one Endpoint for the party key."""
    addresses = set()
    for endpoint in _resources(bundle, "Endpoint"):
        address = endpoint.get("address")
        if isinstance(address, str) and address.strip():
            addresses.add(address.strip().rstrip("/"))
    if not addresses:
        raise AdapterError(
            grpc.StatusCode.NOT_FOUND,
            "SDS_NOT_FOUND",
            f"SDS has no GP Connect structured-record Endpoint for ODS {ods_code}",
            {"ods_code": ods_code, "sds_resource": "Endpoint"},
        )
    if len(addresses) > 1:
        raise AdapterError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "SDS_AMBIGUOUS",
            f"SDS returned {len(addresses)} different Endpoint addresses for ODS {ods_code}",
            {"ods_code": ods_code, "sds_resource": "Endpoint"},
        )
    return next(iter(addresses))


class SdsClient:
    """Looks endpoints up in SDS (with retries and a breaker) and caches the answers."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        cache: EndpointCache,
        breaker: CircuitBreaker,
    ) -> None:
        self._settings = settings
        self._http = http
        self._cache = cache
        self._breaker = breaker
        self._policy = RetryPolicy(
            max_attempts=settings.sds_max_attempts,
            base_delay=settings.retry_backoff_base_seconds,
            max_delay=settings.retry_backoff_max_seconds,
            retry_after_cap=settings.retry_after_max_seconds,
        )
        self._inflight: SingleFlight[str, ProviderEndpoint] = SingleFlight()

    @property
    def cache(self) -> EndpointCache:
        return self._cache

    async def lookup(
        self, ods_code: str, deadline: Deadline, correlation_id: str = ""
    ) -> tuple[ProviderEndpoint, bool]:
        """(endpoint, from_cache). Only successful lookups are cached.

        Concurrent lookups of one ODS code on a cold cache share one SDS round trip (in this
        process), so a burst of requests for one practice does not become a burst on SDS.
        `deadline` is this caller's: it bounds how long this caller waits, not the shared lookup.
        """
        cached = await self._cache.get(ods_code)
        if cached is not None:
            return cached, True
        # The shared lookup runs under the service's own deadline (xcagw_common.singleflight).
        # It sends the first caller's correlation id: one SDS request has one.
        shared_deadline = Deadline.after(self._settings.request_deadline_seconds)
        try:
            endpoint, _ = await self._inflight.join(
                ods_code,
                lambda: self._lookup_sds(ods_code, shared_deadline, correlation_id),
                deadline.remaining(),
            )
        except TimeoutError:
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                "SDS lookup did not finish within the deadline",
                {"upstream": "sds"},
            ) from None
        return endpoint, False

    async def _lookup_sds(
        self, ods_code: str, deadline: Deadline, correlation_id: str
    ) -> ProviderEndpoint:
        org = f"{ODS_SYSTEM}|{ods_code}"
        interaction = f"{INTERACTION_SYSTEM}|{STRUCTURED_INTERACTION}"
        try:
            async with self._breaker.guard() as permit:
                devices = await self._search(
                    "Device",
                    [("organization", org), ("identifier", interaction)],
                    deadline,
                    correlation_id,
                    permit,
                )
                asid, party_key = select_device(devices, ods_code)
                endpoints = await self._search(
                    "Endpoint",
                    [
                        ("organization", org),
                        ("identifier", interaction),
                        ("identifier", f"{PARTY_KEY_SYSTEM}|{party_key}"),
                    ],
                    deadline,
                    correlation_id,
                    permit,
                )
                address = select_address(endpoints, ods_code)
        except CircuitOpenError as exc:
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "CIRCUIT_OPEN",
                "SDS is failing; calls are paused",
                {"upstream": "sds", "retry_after_seconds": f"{exc.retry_after:.1f}"},
            ) from exc
        endpoint = ProviderEndpoint(ods_code, asid, party_key, address)
        await self._cache.put(endpoint)
        return endpoint

    async def _search(
        self,
        resource: str,
        params: list[tuple[str, str | int | float | bool | None]],
        deadline: Deadline,
        correlation_id: str,
        permit: Any,
    ) -> Any:
        url = f"{self._settings.sds_base_url}/{resource}"
        headers = {
            "apikey": self._settings.sds_api_key.get_secret_value(),
            # SDS FHIR API: X-Request-ID is one UUID per request (the same on its retries).
            "X-Request-ID": str(uuid.uuid4()),
            "Accept": "application/fhir+json",
        }
        # The partner controls the correlation id (its wsa:MessageID): CR/LF or non-ASCII in it
        # would fail the request locally (h11's LocalProtocolError, a TransportError: retried
        # and counted against the shared "sds" breaker). Such a value is left out.
        safe_correlation_id = safe_header_value(correlation_id)
        if safe_correlation_id is not None:
            headers["X-Correlation-ID"] = safe_correlation_id

        async def send() -> httpx.Response:
            timeout = min(self._settings.sds_timeout_seconds, deadline.remaining())
            started = time.perf_counter()
            label = "error"
            try:
                response = await self._http.get(
                    url, params=params, headers=headers, timeout=timeout
                )
                label = str(response.status_code)
                return response
            except httpx.TimeoutException:
                label = "timeout"
                raise
            finally:
                UPSTREAM_LATENCY.labels("sds", label).observe(time.perf_counter() - started)

        try:
            response = await retry_http(send, self._policy, deadline=deadline, upstream="sds")
        except DeadlineExceededError as exc:
            # Only a deadline the upstream used up counts against its breaker; one spent
            # before sending (an earlier lookup, our own rate limiter) says nothing of it.
            if exc.upstream_failure:
                permit.record_failure()
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                f"SDS {resource} search did not finish within the deadline",
                {"upstream": "sds"},
            ) from exc
        except httpx.TimeoutException as exc:
            permit.record_failure()
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "UPSTREAM_TIMEOUT",
                f"SDS {resource} search timed out",
                {"upstream": "sds"},
            ) from exc
        except httpx.TransportError as exc:
            permit.record_failure()
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                f"SDS unreachable ({type(exc).__name__})",
                {"upstream": "sds"},
            ) from exc
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise AdapterError(
                    grpc.StatusCode.UNAVAILABLE,
                    "SDS_INVALID_RESPONSE",
                    f"SDS {resource} search returned a body that is not JSON",
                    {"upstream": "sds"},
                ) from exc
        meta = {"upstream": "sds", "http_status": str(status)}
        if status in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                meta["retry_after_seconds"] = f"{retry_after:.1f}"
        if status >= 500:
            permit.record_failure()
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                f"SDS answered HTTP {status}",
                meta,
            )
        if status == 429:
            raise AdapterError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", "SDS rate limit", meta
            )
        # 400/401/403/404: our request or API key was refused; nothing a retry can fix.
        raise AdapterError(
            grpc.StatusCode.INTERNAL,
            "SDS_REQUEST_REJECTED",
            f"SDS refused the {resource} search with HTTP {status}",
            meta,
        )
