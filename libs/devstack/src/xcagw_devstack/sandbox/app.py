"""One FastAPI app serving every NHS fake, the admin endpoints and fault injection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from xcagw_devstack.sandbox import gpconnect, oauth, pds, sds, terminology
from xcagw_devstack.sandbox.config import SandboxSettings
from xcagw_devstack.sandbox.faults import ApiName, Decision, FaultConfig
from xcagw_devstack.sandbox.outcomes import (
    gpc_outcome,
    json_response,
    oauth_error,
    pds_outcome,
    ssp_outcome,
)
from xcagw_devstack.sandbox.panel import PANEL, PRACTICES
from xcagw_devstack.sandbox.state import SandboxState, get_state

logger = logging.getLogger("xcagw_devstack.sandbox")

_PREFIXES: tuple[tuple[str, ApiName], ...] = (
    ("/oauth2/", "oauth"),
    ("/personal-demographics/", "pds"),
    ("/spine-directory/", "sds"),
    ("/gpconnect/", "gpconnect"),
    ("/terminology/", "terminology"),
)


def api_of(path: str) -> ApiName | None:
    """Which fake a path belongs to (admin and health paths belong to none)."""
    for prefix, api in _PREFIXES:
        if path.startswith(prefix):
            return api
    return None


def _fault_response(api: ApiName, decision: Decision) -> Response:
    status = decision.status
    headers = {"Retry-After": str(decision.retry_after)} if status in (429, 503) else {}
    if api == "oauth":
        error = "too_many_requests" if status == 429 else "server_error"
        return json_response(
            oauth_error(error, "Injected fault"),
            status,
            media_type="application/json",
            headers=headers,
        )
    if api == "gpconnect":
        if status == 502:
            return json_response(
                ssp_outcome(502, "ERROR_COMMUNICATING_TO_ENDPOINT_URL", "transient"),
                status,
                headers=headers,
            )
        code = "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST"
        return json_response(
            gpc_outcome(code, "exception", diagnostics="Injected fault"), status, headers=headers
        )
    if status == 429:
        body = pds_outcome(
            "TOO_MANY_REQUESTS",
            "throttled",
            diagnostics="Your app is being rate limited (injected fault)",
        )
    elif status >= 500:
        body = pds_outcome("SERVICE_UNAVAILABLE", "transient", diagnostics="Injected fault")
    else:
        body = pds_outcome("INVALID_VALUE", "value", diagnostics="Injected fault")
    return json_response(body, status, headers=headers)


def _timeout_response(api: ApiName) -> Response:
    if api == "pds":
        # PDS "Response codes": the proxy answers 408 and the client retries with the same
        # X-Request-ID.
        return json_response(
            pds_outcome(
                "UNABLE_TO_CALL_SERVICE", "timeout", diagnostics="The downstream service timed out"
            ),
            408,
            headers={"Retry-After": "5"},
        )
    return _fault_response(api, Decision(action="error", status=504))


class SandboxMiddleware(BaseHTTPMiddleware):
    """Counts requests, applies faults and logs one line per request (route template only)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        api = api_of(request.url.path)
        if api is None:
            return await call_next(request)
        state = get_state(request)
        state.stats.requests[api] += 1
        started = time.perf_counter()
        decision = state.faults.decide(api)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.action == "hang":
            await asyncio.sleep(decision.hang_seconds)
            response = _timeout_response(api)
        elif decision.action in ("error", "throttle"):
            response = _fault_response(api, decision)
        else:
            response = await call_next(request)
            if decision.action == "malformed":
                body = b""
                async for chunk in response.body_iterator:  # type: ignore[attr-defined]
                    body += chunk if isinstance(chunk, bytes) else chunk.encode()
                headers = {
                    k: v for k, v in response.headers.items() if k.lower() != "content-length"
                }
                response = Response(
                    body[: len(body) // 2], status_code=response.status_code, headers=headers
                )
        state.stats.responses.setdefault(api, Counter())[str(response.status_code)] += 1
        route = request.scope.get("route")
        # Never the raw path or query: they carry NHS numbers and names.
        template = getattr(route, "path", "unmatched")
        logger.info(
            "%s %s -> %s",
            request.method,
            template,
            response.status_code,
            extra={
                "ecs": {
                    "labels.api": api,
                    "url.template": template,
                    "http.response.status_code": response.status_code,
                    "event.duration": int((time.perf_counter() - started) * 1e9),
                    "labels.fault": decision.action,
                }
            },
        )
        return response


def _admin(app: FastAPI) -> None:
    @app.get("/_health")
    async def health() -> dict[str, str]:
        return {"status": "pass"}

    @app.get("/_admin/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return get_state(request).stats.as_json()

    @app.post("/_admin/stats/reset")
    async def reset_stats(request: Request) -> dict[str, Any]:
        state = get_state(request)
        state.stats.reset()
        return state.stats.as_json()

    @app.get("/_admin/faults")
    async def get_faults(request: Request) -> dict[str, Any]:
        return get_state(request).faults.config.model_dump(exclude_none=True)

    @app.put("/_admin/faults")
    async def put_faults(request: Request) -> Response:
        try:
            config = FaultConfig.model_validate_json(await request.body())
        except ValidationError as exc:
            return json_response(
                {
                    "error": "invalid fault configuration",
                    "details": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    ),
                },
                400,
                media_type="application/json",
            )
        get_state(request).faults.set(config)
        return json_response(config.model_dump(exclude_none=True), media_type="application/json")

    @app.delete("/_admin/faults")
    async def delete_faults(request: Request) -> dict[str, Any]:
        get_state(request).faults.clear()
        return {}

    @app.post("/_admin/tokens/expire")
    async def expire_tokens(request: Request) -> dict[str, int]:
        token: str | None = None
        body = await request.body()
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            if isinstance(doc, dict) and isinstance(doc.get("access_token"), str):
                token = doc["access_token"]
        return {"expired": get_state(request).tokens.expire(token)}

    @app.get("/_admin/panel")
    async def panel() -> dict[str, Any]:
        return {
            "patients": [dataclasses.asdict(p) for p in PANEL],
            "practices": [dataclasses.asdict(p) for p in PRACTICES],
        }


def _error_body(request: Request, status: int, text: str) -> Response:
    api = api_of(request.url.path)
    if api == "oauth":
        return json_response(
            oauth_error("invalid_request", text), status, media_type="application/json"
        )
    if api == "gpconnect":
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_SERVER_ERROR"
        return json_response(
            gpc_outcome(code, "invalid" if status < 500 else "exception", diagnostics=text), status
        )
    issue_type = "not-found" if status == 404 else ("exception" if status >= 500 else "invalid")
    return json_response(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": issue_type, "diagnostics": text}],
        },
        status,
    )


def create_app(settings: SandboxSettings) -> FastAPI:
    """The sandbox app: OAuth, PDS, SDS, GP Connect, terminology, admin and health on one port."""
    app = FastAPI(title="xcagw NHS sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = SandboxState(settings)
    for module in (oauth, pds, sds, gpconnect, terminology):
        app.include_router(module.router)
    _admin(app)
    app.add_middleware(SandboxMiddleware)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_body(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_body(request, 400, "Invalid request")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The caller gave up before its body arrived (an adapter's deadline passed, e.g. while a
        # latency fault was simulated): nothing failed here and nobody reads the answer. 499 is
        # the usual "client closed request" status in access logs.
        logger.info("client disconnected before the request body was read")
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error", extra={"ecs": {"error.type": type(exc).__name__}})
        return _error_body(request, 500, "Internal error in the NHS sandbox")

    return app
