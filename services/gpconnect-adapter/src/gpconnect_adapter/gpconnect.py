"""The `$gpc.getstructuredrecord` call: SSP routing, Ssp-* headers, retries, per-provider breaker.

GP Connect 1.6 "Retrieve a patient's structured record":
`POST https://[proxy_server]/https://[provider_server]/[fhir_base]/Patient/$gpc.getstructuredrecord`
with Ssp-TraceID, Ssp-From, Ssp-To, Ssp-InteractionID and the audit JWT as a bearer token.

Retries: the operation is a read (the OperationDefinition does not change state), so attempts
after a 5xx, 429 or timeout are safe. Every attempt of one logical request carries the same
Ssp-TraceID and JWT: the SSP and provider audit trails then show one access with its retries (an
attempt that timed out on our side may still have been served and audited by the provider), and
the JWT (exp = iat + 300 s) outlives the overall deadline.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from gpconnect_adapter.config import Settings
from gpconnect_adapter.outcomes import AdapterError, from_http
from gpconnect_adapter.sds import STRUCTURED_INTERACTION, ProviderEndpoint
from xcagw_common.metrics import UPSTREAM_LATENCY
from xcagw_common.resilience import (
    CircuitBreakerRegistry,
    CircuitOpenError,
    Deadline,
    DeadlineExceededError,
    RetryPolicy,
    parse_retry_after,
    retry_http,
)

FHIR_JSON = "application/fhir+json;charset=utf-8"
OPERATION_PATH = "/Patient/$gpc.getstructuredrecord"


@dataclass
class ProviderResult:
    """The provider's Bundle bytes exactly as received and the number of HTTP attempts."""

    body: bytes
    attempts: int


def breaker_name(ods_code: str) -> str:
    """One breaker per provider endpoint, named by the practice ODS code (a bounded label)."""
    return f"gpconnect:{ods_code}"


class GpConnectClient:
    """Sends structured record requests to providers, directly or through the SSP."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, breakers: CircuitBreakerRegistry
    ) -> None:
        self._settings = settings
        self._http = http
        self._breakers = breakers
        self._policy = RetryPolicy(
            max_attempts=settings.gpconnect_max_attempts,
            base_delay=settings.retry_backoff_base_seconds,
            max_delay=settings.retry_backoff_max_seconds,
            retry_after_cap=settings.retry_after_max_seconds,
        )

    def url_for(self, address: str) -> str:
        """The request URL: `{ssp_prefix}/{address}/Patient/$gpc.getstructuredrecord`.

        The SSP takes the provider's full service root URL as its path (GP Connect "absolute
        request"); without a prefix (sandbox, Orange test lab) the provider is called directly.
        """
        target = address.rstrip("/") + OPERATION_PATH
        prefix = self._settings.ssp_prefix
        return f"{prefix}/{target}" if prefix else target

    async def get_structured_record(
        self,
        endpoint: ProviderEndpoint,
        jwt: str,
        parameters: dict[str, Any],
        deadline: Deadline,
        trace_id: str,
    ) -> ProviderResult:
        settings = self._settings
        url = self.url_for(endpoint.address)
        headers = {
            "Accept": FHIR_JSON,
            "Content-Type": FHIR_JSON,
            "Ssp-TraceID": trace_id,
            "Ssp-From": settings.consumer_asid,
            "Ssp-To": endpoint.asid,
            "Ssp-InteractionID": STRUCTURED_INTERACTION,
            "Authorization": f"Bearer {jwt}",
        }
        content = json.dumps(parameters, separators=(",", ":")).encode()
        attempts = 0
        meta = {"ods_code": endpoint.ods_code, "ssp_trace_id": trace_id}

        async def send() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            timeout = min(settings.gpconnect_timeout_seconds, deadline.remaining())
            request = self._http.build_request(
                "POST", url, headers=headers, content=content, timeout=timeout
            )
            started = time.perf_counter()
            label = "error"
            try:
                response = await self._http.send(request, stream=True)
                label = str(response.status_code)
                try:
                    body = await self._read_limited(response, meta)
                finally:
                    await response.aclose()
            except httpx.TimeoutException:
                label = "timeout"
                raise
            finally:
                UPSTREAM_LATENCY.labels("gpconnect", label).observe(time.perf_counter() - started)
            # A fresh Response holding the decoded body; only the headers we use are kept (a
            # Content-Encoding header would make httpx decode the body a second time).
            kept = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
            return httpx.Response(response.status_code, headers=kept, content=body)

        try:
            async with self._breakers.get(breaker_name(endpoint.ods_code)).guard() as permit:
                try:
                    response = await retry_http(
                        send, self._policy, deadline=deadline, upstream="gpconnect"
                    )
                except DeadlineExceededError as exc:
                    # Only a deadline the upstream used up counts against its breaker; one spent
                    # before sending (an earlier lookup, our own rate limiter) says nothing of it.
                    if exc.upstream_failure:
                        permit.record_failure()
                    raise AdapterError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "DEADLINE_EXCEEDED",
                        f"GP Connect provider did not answer within the deadline "
                        f"({attempts} attempt(s))",
                        {**meta, "attempts": str(attempts)},
                    ) from exc
                except httpx.TimeoutException as exc:
                    permit.record_failure()
                    raise AdapterError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "UPSTREAM_TIMEOUT",
                        f"GP Connect provider timed out ({attempts} attempt(s))",
                        {**meta, "attempts": str(attempts)},
                    ) from exc
                except httpx.TransportError as exc:
                    permit.record_failure()
                    raise AdapterError(
                        grpc.StatusCode.UNAVAILABLE,
                        "UPSTREAM_UNAVAILABLE",
                        f"GP Connect provider unreachable ({type(exc).__name__}, "
                        f"{attempts} attempt(s))",
                        {**meta, "attempts": str(attempts)},
                    ) from exc
                status = response.status_code
                if 200 <= status < 300:
                    return ProviderResult(response.content, attempts)
                error = from_http(
                    status,
                    response.content,
                    upstream="GP Connect",
                    retry_after_seconds=parse_retry_after(response.headers.get("Retry-After")),
                    metadata={**meta, "attempts": str(attempts)},
                )
                if error.upstream_failure:
                    permit.record_failure()
                raise error
        except CircuitOpenError as exc:
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "CIRCUIT_OPEN",
                "GP Connect provider is failing; calls to it are paused",
                {**meta, "retry_after_seconds": f"{exc.retry_after:.1f}"},
            ) from exc

    async def _read_limited(self, response: httpx.Response, meta: dict[str, str]) -> bytes:
        limit = self._settings.max_record_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, meta)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit, meta)
        return bytes(body)


_KEPT_HEADERS = frozenset({"retry-after", "content-type"})


def _too_large(limit: int, meta: dict[str, str]) -> AdapterError:
    return AdapterError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RECORD_TOO_LARGE",
        f"GP Connect record exceeds the {limit} byte limit",
        dict(meta),
    )
