"""gRPC TokenService (xcagw.token.v1.TokenService).

Errors carry a google.rpc.ErrorInfo (domain "xcagw") whose `reason` is stable; read it with
`xcagw_common.errors.error_reason`. Messages never contain the client assertion, the access token
or key material. Failed token requests also carry ErrorInfo metadata `upstream_status` (the NHS
HTTP status) and `upstream_error` (the OAuth `error` code) when the NHS answered.

GetNhsAccessToken: NHS OAuth answers (nhs-apis.md §2.3; NHS wording "in JWT" or "in
client_assertion JWT") and local failures:

| NHS answer / condition                   | gRPC status         | ErrorInfo reason                |
|------------------------------------------|---------------------|---------------------------------|
| 400 Invalid 'alg' header (must be RS512) | INTERNAL            | OAUTH_INVALID_ALG               |
| 400 Missing 'kid' header                 | INTERNAL            | OAUTH_MISSING_KID               |
| 401 Invalid 'kid' header: no public key  | FAILED_PRECONDITION | OAUTH_INVALID_KID               |
| 400 Invalid 'typ' header                 | INTERNAL            | OAUTH_INVALID_TYP               |
| 400 Missing or non-matching iss/sub      | INTERNAL            | OAUTH_ISS_SUB_MISMATCH          |
| 401 Invalid iss/sub (API key unknown)    | FAILED_PRECONDITION | OAUTH_UNKNOWN_API_KEY           |
| 401 Missing or invalid aud claim         | FAILED_PRECONDITION | OAUTH_INVALID_AUD               |
| 400 Non-unique jti claim                 | ABORTED             | OAUTH_JTI_REUSED                |
| 400 Missing / invalid jti claim          | INTERNAL            | OAUTH_INVALID_JTI               |
| 400 exp: JWT has expired (clock behind)  | FAILED_PRECONDITION | OAUTH_ASSERTION_EXPIRED         |
| 400 exp: more than 5 minutes in future   | FAILED_PRECONDITION | OAUTH_ASSERTION_TOO_LONG        |
| 400 Missing / invalid exp claim          | INTERNAL            | OAUTH_INVALID_EXP               |
| 400 Failed to decode / Malformed JWT     | INTERNAL            | OAUTH_MALFORMED_ASSERTION       |
| 400 client_assertion(_type) missing/bad  | INTERNAL            | OAUTH_INVALID_REQUEST           |
| 400 grant_type invalid or missing        | INTERNAL            | OAUTH_UNSUPPORTED_GRANT_TYPE    |
| 403 You need to register a public key    | FAILED_PRECONDITION | OAUTH_PUBLIC_KEY_NOT_REGISTERED |
| 403 The JWKS endpoint can't be reached   | UNAVAILABLE         | OAUTH_JWKS_UNREACHABLE          |
| 401 JWT signature verification failed    | FAILED_PRECONDITION | OAUTH_INVALID_SIGNATURE         |
| other 401 / 403                          | FAILED_PRECONDITION | OAUTH_UNAUTHORIZED              |
| other 4xx                                | FAILED_PRECONDITION | OAUTH_REJECTED                  |
| 429                                      | RESOURCE_EXHAUSTED  | OAUTH_RATE_LIMITED              |
| 5xx                                      | UNAVAILABLE         | OAUTH_UPSTREAM_ERROR            |
| any other non-200 status                 | UNAVAILABLE         | OAUTH_UNEXPECTED_STATUS         |
| 200 without access_token / expires_in    | UNAVAILABLE         | OAUTH_MALFORMED_RESPONSE        |
| timeout                                  | UNAVAILABLE         | OAUTH_TIMEOUT                   |
| connection refused, DNS, TLS failure     | UNAVAILABLE         | OAUTH_UNREACHABLE               |
| other replica's refresh took too long    | UNAVAILABLE         | OAUTH_REFRESH_TIMEOUT           |
| Redis unreachable (cache, key state)     | UNAVAILABLE         | CACHE_UNAVAILABLE               |
| no signing key loaded on this replica    | FAILED_PRECONDITION | SIGNING_KEY_UNAVAILABLE         |
| api_key or token_url not configured      | FAILED_PRECONDITION | OAUTH_NOT_CONFIGURED            |
| unexpected bug (e.g. corrupt key state)  | INTERNAL            | INTERNAL                        |

INTERNAL means our assertion is wrong (a bug: alert); FAILED_PRECONDITION means configuration or
registration must change (key not in the portal, wrong API key or token URL, clock skew);
UNAVAILABLE, ABORTED and RESOURCE_EXHAUSTED are worth retrying with backoff.

MintGpConnectJwt:

| Condition                                | gRPC status         | ErrorInfo reason                |
|------------------------------------------|---------------------|---------------------------------|
| no RequestContext.user_id                | INVALID_ARGUMENT    | MISSING_REQUESTING_USER         |
| audience not an http(s) URL              | INVALID_ARGUMENT    | INVALID_AUDIENCE                |
| requested_scope not e.g. patient/*.read  | INVALID_ARGUMENT    | INVALID_REQUESTED_SCOPE         |
| no organisation name (context, settings) | INVALID_ARGUMENT    | MISSING_REQUESTING_ORGANISATION |
| gpc_issuer / gpc_consumer_asid unset     | FAILED_PRECONDITION | GPC_NOT_CONFIGURED              |
| organisation id has no ODS code          | FAILED_PRECONDITION | ODS_CODE_UNRESOLVED             |
| unexpected bug                           | INTERNAL            | INTERNAL                        |

GetJwks / RotateKeys:

| Condition                               | gRPC status         | ErrorInfo reason        |
|-----------------------------------------|---------------------|-------------------------|
| Redis down, no earlier view of the keys | UNAVAILABLE         | CACHE_UNAVAILABLE       |
| no signing key yet                      | FAILED_PRECONDITION | SIGNING_KEY_UNAVAILABLE |
| read-only keys_dir, no unused PEM       | FAILED_PRECONDITION | NO_NEXT_KEY             |
| another replica holds the rotation lock | ABORTED             | ROTATION_IN_PROGRESS    |
| keys_dir not readable / writable        | INTERNAL            | KEY_STORAGE_ERROR       |
| unexpected bug (e.g. corrupt key state) | INTERNAL            | INTERNAL                |
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NoReturn

import grpc
from redis.exceptions import RedisError

from token_service.config import Settings
from token_service.gpconnect import GpConnectJwtError, build_claims, encode_unsigned
from token_service.keys import KeyFileError
from token_service.metrics import OAUTH_ERRORS, TOKENS_MINTED
from token_service.oauth import NhsTokenProvider, OAuthFailure
from token_service.rotation import (
    Clock,
    KeyManager,
    NoNextKeyError,
    NoSigningKeyError,
    RotationBusyError,
    StateUnavailableError,
)
from xcagw.token.v1 import token_service_pb2, token_service_pb2_grpc
from xcagw_common.errors import abort
from xcagw_common.logging import correlation_id_var, partner_id_var

log = logging.getLogger(__name__)

SERVICE_NAME = "xcagw.token.v1.TokenService"

_Context = grpc.aio.ServicerContext[Any, Any]


def _bind_context(context: Any) -> None:
    """Correlation and partner ids of the caller's RequestContext go into every log line."""
    if context is not None:
        correlation_id_var.set(context.correlation_id)
        partner_id_var.set(context.partner_id)


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """Each RPC maps the failures it knows to the tables above; anything else is a bug, answered
    INTERNAL "internal error" (never the exception text, which may quote Redis or key data)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyManager,
        tokens: NhsTokenProvider,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.tokens = tokens
        self.clock = clock

    # ---- RPCs: the house catch-all around each handler -------------------------------------

    async def GetNhsAccessToken(  # noqa: N802 - generated name
        self, request: token_service_pb2.GetNhsAccessTokenRequest, context: _Context
    ) -> token_service_pb2.GetNhsAccessTokenResponse:
        _bind_context(request.context)
        try:
            return await self._get_nhs_access_token(request, context)
        except grpc.aio.AbortError:
            raise  # already answered with its mapped status
        except Exception:  # noqa: BLE001 - never a stack trace or exception text to the caller
            OAUTH_ERRORS.labels("INTERNAL").inc()
            await _crash(context, "GetNhsAccessToken")

    async def MintGpConnectJwt(  # noqa: N802 - generated name
        self, request: token_service_pb2.MintGpConnectJwtRequest, context: _Context
    ) -> token_service_pb2.MintGpConnectJwtResponse:
        _bind_context(request.context)
        try:
            return await self._mint_gpconnect_jwt(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:  # noqa: BLE001 - never a stack trace or exception text to the caller
            await _crash(context, "MintGpConnectJwt")

    async def GetJwks(  # noqa: N802 - generated name
        self, request: token_service_pb2.GetJwksRequest, context: _Context
    ) -> token_service_pb2.GetJwksResponse:
        try:
            return await self._get_jwks(context)
        except grpc.aio.AbortError:
            raise
        except Exception:  # noqa: BLE001 - never a stack trace or exception text to the caller
            await _crash(context, "GetJwks")

    async def RotateKeys(  # noqa: N802 - generated name
        self, request: token_service_pb2.RotateKeysRequest, context: _Context
    ) -> token_service_pb2.RotateKeysResponse:
        _bind_context(request.context)
        try:
            return await self._rotate_keys(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:  # noqa: BLE001 - never a stack trace or exception text to the caller
            await _crash(context, "RotateKeys")

    # ---- handlers ------------------------------------------------------------------------------

    async def _get_nhs_access_token(
        self, request: token_service_pb2.GetNhsAccessTokenRequest, context: _Context
    ) -> token_service_pb2.GetNhsAccessTokenResponse:
        try:
            token, from_cache = await self.tokens.get_token(request.force_refresh)
        except OAuthFailure as failure:
            await abort(context, failure.code, failure.message, failure.reason, failure.metadata)
        return token_service_pb2.GetNhsAccessTokenResponse(
            access_token=token.access_token,
            expires_in_seconds=self.tokens.expires_in(token),
            token_type=token.token_type,
            from_cache=from_cache,
        )

    async def _mint_gpconnect_jwt(
        self, request: token_service_pb2.MintGpConnectJwtRequest, context: _Context
    ) -> token_service_pb2.MintGpConnectJwtResponse:
        try:
            claims = build_claims(
                self.settings,
                request.context,
                request.audience.strip(),
                request.requested_scope,
                self.clock(),
            )
        except GpConnectJwtError as error:
            await abort(context, error.code, error.message, error.reason)
        TOKENS_MINTED.labels("gpconnect_jwt").inc()
        return token_service_pb2.MintGpConnectJwtResponse(
            jwt=encode_unsigned(claims), expires_at=int(claims["exp"])
        )

    async def _get_jwks(self, context: _Context) -> token_service_pb2.GetJwksResponse:
        try:
            view = await self.keys.view()
        except StateUnavailableError:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "key state unavailable (Redis)",
                "CACHE_UNAVAILABLE",
            )
        if view.active is None:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "no signing key yet",
                "SIGNING_KEY_UNAVAILABLE",
            )
        return token_service_pb2.GetJwksResponse(
            jwks_json=json.dumps(view.jwks()), active_kid=view.active.kid
        )

    async def _rotate_keys(
        self, request: token_service_pb2.RotateKeysRequest, context: _Context
    ) -> token_service_pb2.RotateKeysResponse:
        try:
            result = await self.keys.rotate("manual")
        except RotationBusyError:
            await abort(
                context,
                grpc.StatusCode.ABORTED,
                "another replica is rotating keys; retry",
                "ROTATION_IN_PROGRESS",
            )
        except NoNextKeyError:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "keys_dir is read-only and holds no unused key: add <kid>.pem to the secret",
                "NO_NEXT_KEY",
            )
        except NoSigningKeyError:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "no signing key",
                "SIGNING_KEY_UNAVAILABLE",
            )
        except (StateUnavailableError, RedisError):
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "key state unavailable (Redis)",
                "CACHE_UNAVAILABLE",
            )
        except (KeyFileError, OSError) as exc:
            log.error("key storage error: %s", type(exc).__name__)
            await abort(
                context,
                grpc.StatusCode.INTERNAL,
                "could not read or write keys_dir",
                "KEY_STORAGE_ERROR",
            )
        log.info(
            "key rotation requested",
            extra={
                "ecs": {
                    "labels.kid": result.new_kid,
                    "labels.previous_kid": result.previous_kid,
                    "labels.started": result.started,
                    "user.id": request.context.user_id,
                }
            },
        )
        return token_service_pb2.RotateKeysResponse(
            new_kid=result.new_kid,
            previous_kid=result.previous_kid,
            published_kids=result.published_kids,
        )


async def _crash(context: _Context, rpc: str) -> NoReturn:
    """The house answer to a bug: the traceback goes to our log, the caller gets INTERNAL with a
    fixed message. The log line names the RPC only; tracebacks carry no local variables, so no
    request field, token or key material is written."""
    log.exception("%s failed unexpectedly", rpc)
    await abort(context, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")
