"""NHS API platform access tokens: signed-JWT client credentials, shared cache, single flight.

nhs-apis.md §2: POST the RS512 client assertion to the token URL; the answer's `expires_in` is a
*string* of seconds. The token is cached in Redis for every replica until `token_refresh_skew`
before it expires. A refresh is single-flight twice over: inside one process callers share one
asyncio task, and across replicas a Redis lock elects the one process that calls the NHS while
the others wait for the cache (or for the failure the lock holder recorded for that flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from redis.exceptions import RedisError

from token_service.config import Settings, app_namespace
from token_service.metrics import CACHE_NAME, OAUTH_ERRORS, TOKENS_MINTED, UPSTREAM_NAME
from token_service.redis_lock import RedisLock
from token_service.rotation import (
    Clock,
    KeyManager,
    NoSigningKeyError,
    StateUnavailableError,
)
from xcagw_common.metrics import CACHE_REQUESTS, UPSTREAM_LATENCY

log = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_POLL_SECONDS = 0.05
_MAX_MESSAGE = 200
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


@dataclass
class OAuthFailure(Exception):
    """A token request failed: the gRPC status, ErrorInfo reason and a leak-free message."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "code": self.code.name,
                "reason": self.reason,
                "message": self.message,
                "metadata": self.metadata,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> OAuthFailure:
        doc = json.loads(raw)
        return cls(
            code=grpc.StatusCode[str(doc["code"])],
            reason=str(doc["reason"]),
            message=str(doc["message"]),
            metadata={str(k): str(v) for k, v in dict(doc.get("metadata", {})).items()},
        )


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "token_type": self.token_type,
                "expires_at": self.expires_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> AccessToken:
        doc = json.loads(raw)
        return cls(str(doc["access_token"]), str(doc["token_type"]), float(doc["expires_at"]))


_S = grpc.StatusCode
# nhs-apis.md §2.3 and NHSDigital/identity-service-api (proxies/live/apiproxy): the NHS answers
# {"error": ..., "error_description": ..., "message_id": ...}. Matched on the description,
# lower-cased and without quotes, so both "in JWT" and "in client_assertion JWT" wordings match.
# The servicer module docstring documents this table; keep the two in step.
_DESCRIPTION_RULES: tuple[tuple[str, grpc.StatusCode, str], ...] = (
    ("alg header", _S.INTERNAL, "OAUTH_INVALID_ALG"),
    ("missing kid header", _S.INTERNAL, "OAUTH_MISSING_KID"),
    ("no matching public key", _S.FAILED_PRECONDITION, "OAUTH_INVALID_KID"),
    ("typ header", _S.INTERNAL, "OAUTH_INVALID_TYP"),
    ("non-matching iss/sub", _S.INTERNAL, "OAUTH_ISS_SUB_MISMATCH"),
    ("invalid iss/sub", _S.FAILED_PRECONDITION, "OAUTH_UNKNOWN_API_KEY"),
    ("aud claim", _S.FAILED_PRECONDITION, "OAUTH_INVALID_AUD"),
    ("non-unique jti", _S.ABORTED, "OAUTH_JTI_REUSED"),
    ("jti claim", _S.INTERNAL, "OAUTH_INVALID_JTI"),
    ("jwt has expired", _S.FAILED_PRECONDITION, "OAUTH_ASSERTION_EXPIRED"),
    ("more than 5 minutes in future", _S.FAILED_PRECONDITION, "OAUTH_ASSERTION_TOO_LONG"),
    ("exp claim", _S.INTERNAL, "OAUTH_INVALID_EXP"),
    ("failed to decode jwt", _S.INTERNAL, "OAUTH_MALFORMED_ASSERTION"),
    ("malformed jwt", _S.INTERNAL, "OAUTH_MALFORMED_ASSERTION"),
    ("client_assertion_type", _S.INTERNAL, "OAUTH_INVALID_REQUEST"),
    ("missing client_assertion", _S.INTERNAL, "OAUTH_INVALID_REQUEST"),
    ("grant_type", _S.INTERNAL, "OAUTH_UNSUPPORTED_GRANT_TYPE"),
    ("register a public key", _S.FAILED_PRECONDITION, "OAUTH_PUBLIC_KEY_NOT_REGISTERED"),
    ("jwks endpoint", _S.UNAVAILABLE, "OAUTH_JWKS_UNREACHABLE"),
    ("signature verification failed", _S.FAILED_PRECONDITION, "OAUTH_INVALID_SIGNATURE"),
)
_ERROR_CODE_RULES: dict[str, tuple[grpc.StatusCode, str]] = {
    "unsupported_grant_type": (_S.INTERNAL, "OAUTH_UNSUPPORTED_GRANT_TYPE"),
    "invalid_client": (_S.FAILED_PRECONDITION, "OAUTH_UNKNOWN_API_KEY"),
    "unauthorized_client": (_S.FAILED_PRECONDITION, "OAUTH_UNAUTHORIZED"),
}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove anything token-like (and the given secrets) from upstream text; cap its length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _JWT_LIKE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:_MAX_MESSAGE]


def map_oauth_error(status: int, body: Any, secrets: Iterable[str] = ()) -> OAuthFailure:
    """The gRPC status and reason for one failed token response."""
    error = description = ""
    if isinstance(body, dict):
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or body.get("message") or "")
    normalised = description.lower().replace("'", "").replace('"', "")
    code, reason = _S.FAILED_PRECONDITION, "OAUTH_REJECTED"
    if status == 429:
        code, reason = _S.RESOURCE_EXHAUSTED, "OAUTH_RATE_LIMITED"
    elif status >= 500:
        code, reason = _S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR"
    elif rule := next((r for r in _DESCRIPTION_RULES if r[0] in normalised), None):
        code, reason = rule[1], rule[2]
    elif error in _ERROR_CODE_RULES:
        code, reason = _ERROR_CODE_RULES[error]
    elif status in (401, 403):
        code, reason = _S.FAILED_PRECONDITION, "OAUTH_UNAUTHORIZED"
    elif not 400 <= status < 500:
        code, reason = _S.UNAVAILABLE, "OAUTH_UNEXPECTED_STATUS"
    detail = scrub(description or error, secrets)
    message = f"NHS OAuth token endpoint answered HTTP {status}" + (f": {detail}" if detail else "")
    metadata = {"upstream_status": str(status)}
    if error:
        metadata["upstream_error"] = scrub(error, secrets)[:64]
    return OAuthFailure(code, reason, message, metadata)


def _parse_success(body: Any, now: float) -> AccessToken:
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("no access_token")
    # nhs-apis.md §2.2: expires_in is a string ("599"); accept an integer too.
    raw = body.get("expires_in")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError("no expires_in")
    expires_in = int(str(raw).strip())
    if expires_in <= 0:
        raise ValueError("expires_in not positive")
    token_type = body.get("token_type") or "Bearer"
    return AccessToken(token, str(token_type), now + expires_in)


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class NhsTokenProvider:
    """Gets NHS access tokens for one application (API key) and token URL."""

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        keys: KeyManager,
        http: httpx.AsyncClient,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.http = http
        self.clock = clock
        # One cache entry per application and environment (nhs-apis.md §2.2).
        prefix = f"{app_namespace(settings)}:nhs-oauth"
        self.cache_key = f"{prefix}:token"
        self._flight_prefix = f"{prefix}:flight:"
        self._lock = RedisLock(redis, f"{prefix}:lock", settings.oauth_timeout_seconds * 2 + 5)
        self._flight: asyncio.Task[tuple[AccessToken, bool]] | None = None

    # --- public ---------------------------------------------------------------------------------

    async def get_token(self, force_refresh: bool = False) -> tuple[AccessToken, bool]:
        """(token, from_cache). Raises OAuthFailure."""
        try:
            cached = await self._cached()
            if cached is not None and not force_refresh:
                CACHE_REQUESTS.labels(CACHE_NAME, "hit").inc()
                return cached, True
            CACHE_REQUESTS.labels(CACHE_NAME, "miss").inc()
            # force_refresh: the caller's API call was refused with this token; skip it.
            stale = cached.access_token if (force_refresh and cached is not None) else None
            token, from_cache = await self._join_flight(stale)
            if stale is not None and token.access_token == stale:
                # We joined a flight that served the rejected token from the cache: fetch anew.
                token, from_cache = await self._join_flight(stale)
            return token, from_cache
        except OAuthFailure as failure:
            OAUTH_ERRORS.labels(failure.reason).inc()
            raise

    def expires_in(self, token: AccessToken) -> int:
        return max(0, int(token.expires_at - self.clock()))

    # --- cache ----------------------------------------------------------------------------------

    async def _cached(self) -> AccessToken | None:
        try:
            raw = await self.redis.get(self.cache_key)
        except RedisError as exc:
            raise OAuthFailure(
                _S.UNAVAILABLE, "CACHE_UNAVAILABLE", "token cache (Redis) unavailable"
            ) from exc
        if raw is None:
            return None
        try:
            token = AccessToken.from_json(raw)
        except (ValueError, KeyError, TypeError):
            return None
        if token.expires_at - self.clock() <= self.settings.token_refresh_skew_seconds:
            return None
        return token

    async def _store(self, token: AccessToken) -> None:
        ttl = token.expires_at - self.clock() - self.settings.token_refresh_skew_seconds
        if ttl < 1:
            # Lives shorter than the refresh skew: use it once, never share it.
            return
        await self.redis.set(self.cache_key, token.to_json(), px=int(ttl * 1000))

    # --- single flight ------------------------------------------------------------------------

    async def _join_flight(self, stale: str | None) -> tuple[AccessToken, bool]:
        flight = self._flight
        if flight is None or flight.done():
            flight = asyncio.create_task(self._refresh_shared(stale))
            # Every waiter may be cancelled (deadline); retrieve the outcome regardless.
            flight.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._flight = flight
        return await asyncio.shield(flight)

    def _usable(self, token: AccessToken | None, stale: str | None) -> bool:
        return token is not None and token.access_token != stale

    async def _refresh_shared(self, stale: str | None) -> tuple[AccessToken, bool]:
        try:
            return await self._refresh_locked(stale)
        except RedisError as exc:
            raise OAuthFailure(
                _S.UNAVAILABLE, "CACHE_UNAVAILABLE", "token cache (Redis) unavailable"
            ) from exc

    async def _refresh_locked(self, stale: str | None) -> tuple[AccessToken, bool]:
        deadline = time.monotonic() + self.settings.refresh_wait_seconds
        while time.monotonic() <= deadline:
            flight_id = await self._lock.try_acquire()
            if flight_id is not None:
                return await self._refresh_as_leader(flight_id, stale)
            holder = await self._lock.holder()
            # Another replica is asking the NHS: wait for its token or its failure.
            while holder is not None and time.monotonic() <= deadline:
                await asyncio.sleep(_POLL_SECONDS)
                cached = await self._cached()
                if cached is not None and self._usable(cached, stale):
                    return cached, True
                await self._raise_flight_failure(holder)
                if await self._lock.holder() != holder:
                    # Released: the holder recorded its failure first, or stored the token.
                    await self._raise_flight_failure(holder)
                    break
        raise OAuthFailure(
            _S.UNAVAILABLE,
            "OAUTH_REFRESH_TIMEOUT",
            "timed out waiting for another replica's token refresh",
        )

    async def _raise_flight_failure(self, flight_id: str) -> None:
        raw = await self.redis.get(self._flight_prefix + flight_id)
        if raw is not None:
            raise OAuthFailure.from_json(raw)

    async def _refresh_as_leader(
        self, flight_id: str, stale: str | None
    ) -> tuple[AccessToken, bool]:
        try:
            cached = await self._cached()
            if cached is not None and self._usable(cached, stale):
                return cached, True
            try:
                token = await self._fetch()
            except OAuthFailure as failure:
                # Callers waiting on this flight (other replicas) get the same answer instead of
                # each asking the NHS again.
                with contextlib.suppress(RedisError):
                    await self.redis.set(
                        self._flight_prefix + flight_id,
                        failure.to_json(),
                        px=int((self.settings.refresh_wait_seconds + 5) * 1000),
                    )
                raise
            await self._store(token)
            return token, False
        finally:
            with contextlib.suppress(RedisError):
                await self._lock.release(flight_id)

    # --- the NHS call -------------------------------------------------------------------------

    async def _fetch(self) -> AccessToken:
        api_key = self.settings.api_key.get_secret_value()
        if not api_key or not self.settings.token_url:
            raise OAuthFailure(
                _S.FAILED_PRECONDITION,
                "OAUTH_NOT_CONFIGURED",
                "TOKEN_SERVICE_API_KEY and TOKEN_SERVICE_TOKEN_URL must be set",
            )
        requested_at = self.clock()
        iat = int(requested_at)
        # nhs-apis.md §2.2: iss = sub = API key, aud = the exact token URL, a fresh UUID jti,
        # exp <= now + 300 (integers).
        claims = {
            "iss": api_key,
            "sub": api_key,
            "aud": self.settings.token_url,
            "jti": str(uuid.uuid4()),
            "iat": iat,
            "exp": iat + self.settings.assertion_lifetime_seconds,
        }
        try:
            kid, assertion = await self.keys.sign(claims)
        except NoSigningKeyError as exc:
            raise OAuthFailure(
                _S.FAILED_PRECONDITION, "SIGNING_KEY_UNAVAILABLE", "no signing key available"
            ) from exc
        except StateUnavailableError as exc:
            raise OAuthFailure(
                _S.UNAVAILABLE, "CACHE_UNAVAILABLE", "key state (Redis) unavailable"
            ) from exc
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        started = time.perf_counter()
        try:
            response = await self.http.post(
                self.settings.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self.settings.oauth_timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            UPSTREAM_LATENCY.labels(UPSTREAM_NAME, "timeout").observe(time.perf_counter() - started)
            raise OAuthFailure(
                _S.UNAVAILABLE, "OAUTH_TIMEOUT", "NHS OAuth token endpoint timed out"
            ) from exc
        except httpx.HTTPError as exc:
            UPSTREAM_LATENCY.labels(UPSTREAM_NAME, "error").observe(time.perf_counter() - started)
            raise OAuthFailure(
                _S.UNAVAILABLE,
                "OAUTH_UNREACHABLE",
                f"NHS OAuth token endpoint unreachable ({type(exc).__name__})",
            ) from exc
        UPSTREAM_LATENCY.labels(UPSTREAM_NAME, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            failure = map_oauth_error(response.status_code, body, (assertion, api_key))
            log.warning(
                "NHS OAuth token request failed",
                extra={
                    "ecs": {
                        "http.response.status_code": response.status_code,
                        "error.code": failure.reason,
                        "labels.kid": kid,
                    }
                },
            )
            raise failure
        try:
            token = _parse_success(body, requested_at)
        except (ValueError, TypeError) as exc:
            raise OAuthFailure(
                _S.UNAVAILABLE,
                "OAUTH_MALFORMED_RESPONSE",
                "NHS OAuth token endpoint answered 200 without a usable token",
            ) from exc
        TOKENS_MINTED.labels("nhs_access_token").inc()
        log.info(
            "NHS access token obtained",
            extra={
                "ecs": {
                    "labels.kid": kid,
                    "labels.expires_in": int(token.expires_at - requested_at),
                }
            },
        )
        return token
