"""The PDS FHIR R4 HTTP client: one httpx.AsyncClient per process, with every resilience layer.

Per logical read (one RPC): circuit breaker (outside) -> bearer token -> retries with full-jitter
backoff on 408/429/5xx/timeouts honouring Retry-After, all under one deadline -> shared rate limit
before each attempt (each attempt uses PDS quota). One X-Request-ID per logical read, reused on
every retry and on the retry after a 401 (nhs-apis.md §1.3: "Reuse the same value when retrying").

Tracing: the generic httpx instrumentation would record the full URL, which holds the NHS number
(path) or names and birth dates (query). It is suppressed for these calls and replaced by one span
per attempt carrying only the URL template, the method and the status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode

from pds_adapter.errors import AdapterError
from pds_adapter.tokens import TokenProvider
from xcagw.common.v1 import common_pb2
from xcagw_common.headers import safe_header_value
from xcagw_common.metrics import UPSTREAM_LATENCY
from xcagw_common.ods import resolve_ods_code
from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Deadline,
    DeadlineExceededError,
    RateLimiter,
    RateLimitExceededError,
    RetryPolicy,
    parse_retry_after,
    retry_http,
)

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

UPSTREAM = "pds"
# RFC 9110 §10.2.3 / RFC 6585 §4: the statuses whose Retry-After is passed on to the caller.
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class PdsResponse:
    """A final PDS answer (after retries): status, body text as received, parsed JSON object.

    `retry_after` is the final answer's Retry-After in seconds, on a 429 or 503 only.
    """

    status_code: int
    text: str
    body: dict[str, Any] | None
    request_id: str
    retry_after: float | None = None


def _parse(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class PdsClient:
    """Reads from PDS (GET only: retries are safe because reads are idempotent)."""

    def __init__(
        self,
        *,
        base_url: str,
        tokens: TokenProvider,
        breaker: CircuitBreaker,
        limiter: RateLimiter,
        retry_policy: RetryPolicy,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        rate_limit_max_wait: float = 2.0,
        end_user_org_ods: str = "",
        end_user_org_ods_map: Mapping[str, str] | None = None,
        max_connections: int = 20,
        verify: str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._tokens = tokens
        self.breaker = breaker
        self._limiter = limiter
        self._policy = retry_policy
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._rate_limit_max_wait = rate_limit_max_wait
        self._end_user_org_ods = end_user_org_ods
        self._end_user_org_ods_map = dict(end_user_org_ods_map or {})
        self._server = httpx.URL(base_url).host
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Accept": "application/fhir+json"},
            limits=httpx.Limits(max_connections=max_connections),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self, context: common_pb2.RequestContext, request_id: str) -> dict[str, str]:
        headers = {"X-Request-ID": request_id}
        # X-Correlation-ID is mirrored by PDS. The partner controls it (wsa:MessageID): a value
        # that is not safe as a header is left out rather than failing the read.
        correlation_id = safe_header_value(context.correlation_id)
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        # nhs-apis.md §1.3: the REQUESTING organisation's ODS code, per request (one gateway serves
        # many partners), resolved like the GP Connect JWT's requesting_organization. The map and
        # the default are validated as ODS codes at start-up, and an organisation id is used as
        # itself only when it is one, so the value is always safe as a header.
        ods = resolve_ods_code(
            context.organization_id, self._end_user_org_ods_map, self._end_user_org_ods
        )
        if ods:
            headers["NHSD-End-User-Organisation-ODS"] = ods
        return headers

    async def read(
        self,
        path: str,
        params: Sequence[tuple[str, str]],
        *,
        context: common_pb2.RequestContext,
        deadline: Deadline,
        url_template: str,
    ) -> PdsResponse:
        """GET `path` (relative to the base URL); the final response, whatever its status.

        Raises AdapterError for what never produced a usable response: circuit open, deadline,
        rate-limit wait too long, timeouts/transport errors after the retries, token failures.
        """
        request_id = str(uuid.uuid4())
        headers = self._headers(context, request_id)
        try:
            async with self.breaker.guard() as permit:
                token = await self._tokens.get(context, deadline=deadline)
                response = await self._send(path, params, headers, token, deadline, url_template)
                if response.status_code == 401:
                    # "Token refresh after expiry": one retry with a fresh token, same request id.
                    token = await self._tokens.get(context, deadline=deadline, rejected=token)
                    response = await self._send(
                        path, params, headers, token, deadline, url_template
                    )
                if response.status_code >= 500 or response.status_code == 408:
                    permit.record_failure()
        except CircuitOpenError as exc:
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                exc.reason,
                f"PDS is failing: circuit open, retry in {max(exc.retry_after, 0.0):.0f}s",
                {"retry_after_seconds": f"{max(exc.retry_after, 0.0):.1f}"},
            ) from exc
        except DeadlineExceededError as exc:
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                exc.reason,
                "PDS did not answer within the deadline",
            ) from exc
        except RateLimitExceededError as exc:
            raise AdapterError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                exc.reason,
                "PDS rate limit reached: no slot within the allowed wait",
                {"retry_after_seconds": f"{exc.retry_after:.1f}"},
            ) from exc
        except httpx.HTTPError as exc:
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                f"PDS unreachable after retries ({type(exc).__name__})",
            ) from exc
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code in _RETRY_AFTER_STATUSES
            else None
        )
        return PdsResponse(
            response.status_code, response.text, _parse(response), request_id, retry_after
        )

    async def _send(
        self,
        path: str,
        params: Sequence[tuple[str, str]],
        headers: dict[str, str],
        token: str,
        deadline: Deadline,
        url_template: str,
    ) -> httpx.Response:
        request_headers = {**headers, "Authorization": f"Bearer {token}"}

        async def attempt() -> httpx.Response:
            await self._limiter.acquire(
                max_wait=min(self._rate_limit_max_wait, deadline.remaining())
            )
            remaining = deadline.remaining()
            timeout = httpx.Timeout(
                min(self._read_timeout, remaining), connect=min(self._connect_timeout, remaining)
            )
            attributes: dict[str, str | int] = {
                "http.request.method": "GET",
                "url.template": url_template,
                "server.address": self._server,
                "xcagw.pds.request_id": headers["X-Request-ID"],
            }
            start = time.perf_counter()
            with _tracer.start_as_current_span(
                f"GET {url_template}", kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    with suppress_http_instrumentation():
                        response = await self._http.get(
                            path, params=list(params), headers=request_headers, timeout=timeout
                        )
                except httpx.HTTPError as exc:
                    UPSTREAM_LATENCY.labels(UPSTREAM, "error").observe(time.perf_counter() - start)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                UPSTREAM_LATENCY.labels(UPSTREAM, str(response.status_code)).observe(
                    time.perf_counter() - start
                )
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            return response

        return await retry_http(attempt, self._policy, deadline=deadline, upstream=UPSTREAM)
