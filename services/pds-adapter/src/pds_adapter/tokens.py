"""NHS access tokens from token-service, held in process until shortly before they expire."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from pds_adapter.errors import AdapterError
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_reason
from xcagw_common.resilience import Deadline


class TokenProvider:
    """Bearer tokens for PDS.

    token-service caches tokens in Redis for every replica; this adds an in-process copy so a PDS
    call normally costs no extra round trip. After PDS answers 401 the caller passes the rejected
    token as `rejected`: unless another request already replaced it, token-service is asked with
    force_refresh=True (nhs-apis.md §2: tokens can be revoked or expire early).
    """

    def __init__(
        self,
        stub: Any,
        *,
        timeout_seconds: float = 3.0,
        refresh_skew_seconds: float = 30.0,
        clock: Any = time.monotonic,
    ) -> None:
        self._stub = stub
        self._timeout = timeout_seconds
        self._skew = refresh_skew_seconds
        self._clock = clock
        self._token = ""  # nosec B105
        self._valid_until = 0.0
        self._lock = asyncio.Lock()

    def _current(self) -> str:
        return self._token if self._token and self._clock() < self._valid_until else ""

    async def get(
        self,
        context: common_pb2.RequestContext,
        *,
        deadline: Deadline,
        rejected: str = "",
    ) -> str:
        """A bearer token; `rejected` is a token PDS refused (forces a refresh)."""
        current = self._current()
        if current and current != rejected:
            return current
        async with self._lock:
            current = self._current()
            if current and current != rejected:
                return current  # fetched or refreshed by another request meanwhile
            return await self._fetch(context, deadline, force_refresh=bool(rejected))

    async def _fetch(
        self, context: common_pb2.RequestContext, deadline: Deadline, *, force_refresh: bool
    ) -> str:
        timeout = min(self._timeout, deadline.remaining())
        if timeout <= 0:
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                "deadline passed before an access token was obtained",
            )
        request = token_service_pb2.GetNhsAccessTokenRequest(
            context=context, force_refresh=force_refresh
        )
        try:
            # wait_for_ready: a connection to token-service that is briefly down (pod restart,
            # DNS not yet answering in a fresh network) is waited for within this deadline
            # instead of failing at once (gRPC doc/wait-for-ready.md); the call is idempotent.
            response = await self._stub.GetNhsAccessToken(
                request, timeout=timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline.expired:
                raise AdapterError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "DEADLINE_EXCEEDED",
                    "deadline passed while waiting for an access token",
                ) from exc
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "TOKEN_UNAVAILABLE",
                f"token-service could not provide an NHS access token ({exc.code().name})",
                {
                    "token_service_code": exc.code().name,
                    "token_service_reason": error_reason(exc),
                },
            ) from exc
        if not response.access_token:
            raise AdapterError(
                grpc.StatusCode.UNAVAILABLE,
                "TOKEN_UNAVAILABLE",
                "token-service returned an empty access token",
            )
        self._token = response.access_token
        lifetime = max(0.0, float(response.expires_in_seconds) - self._skew)
        self._valid_until = self._clock() + lifetime
        return self._token
