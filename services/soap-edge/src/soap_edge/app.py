"""FastAPI app built by `create_app(settings)`: SOAP endpoints, WSDL, health and metrics.

Every SOAP request passes the security layer (soap_edge.security, issue #9) before anything is
processed: partner from the verified client certificate (before the body is read), routing,
transaction permission, rate limit, XUA assertion. Each routed exchange is audited (ATNA,
ITI-20) in Redis before its response is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as _dist_version
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from lxml import etree
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from soap_edge import auditing, iti38, iti39, iti47, iti55
from soap_edge.backends import CCDA, GPCONNECT, PDS, TOKEN, Backends
from soap_edge.config import Settings
from soap_edge.documents import DocumentService
from soap_edge.exchange import Exchange, Gateway, Reply, Route
from soap_edge.metrics import SOAP_FAULTS, SOAP_LATENCY, SOAP_REQUESTS
from soap_edge.security.audit import (
    AUDIT_MESSAGES,
    OUTCOME_MAJOR_FAILURE,
    OUTCOME_SERIOUS_FAILURE,
    AuditUnavailable,
)
from soap_edge.security.errors import RateLimited, SecurityError
from soap_edge.security.faults import security_fault
from soap_edge.security.gate import Caller
from soap_edge.security.headers import HardeningMiddleware
from soap_edge.security.runtime import SecurityRuntime, hardening_config
from soap_edge.security.xua import XuaIdentity, check_resource_id
from soap_edge.soap.envelope import Envelope, build_envelope, read_envelope
from soap_edge.soap.faults import (
    ACTION_NOT_SUPPORTED,
    ONLY_ANONYMOUS,
    FaultCode,
    SoapFault,
    build_fault_element,
    not_understood_headers,
    receiver,
    sender,
    upgrade_header,
)
from soap_edge.soap.mtom import decode_http_body, package_mtom, resolve_xop
from soap_edge.soap.ns import HL7, WSA, q
from soap_edge.soap.parsing import XmlRejected, parse_untrusted
from soap_edge.soap.wsa import (
    Addressing,
    check_must_understand,
    read_addressing,
    read_message_id,
    response_headers,
)
from soap_edge.soap.xua import normalise_hcid
from soap_edge.store import Store
from soap_edge.wsdl import build_wsdl
from xcagw.common.v1 import common_pb2
from xcagw_common.logging import correlation_id_var, partner_id_var
from xcagw_common.redis import create_redis

log = logging.getLogger(__name__)

SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
MTOM_DOMAIN = "soap-edge.xcagw"

# Route ids -> routes; the table of ihe-xca-rules §1.3.
ROUTES: dict[str, Route] = {
    "ITI-47": Route("ITI-47", iti47.ACTION, iti47.RESPONSE_ACTION, iti47.BODY_ROOT, iti47.handle),
    "ITI-47-continue": Route(
        "ITI-47",
        iti47.CONTINUE_ACTION,
        iti47.RESPONSE_ACTION,
        iti47.CONTINUATION_ROOT,
        iti47.handle_continue,
    ),
    "ITI-47-cancel": Route(
        "ITI-47",
        iti47.CANCEL_ACTION,
        iti47.CANCEL_RESPONSE_ACTION,
        iti47.CONTINUATION_ROOT,
        iti47.handle_cancel,
    ),
    "ITI-55": Route("ITI-55", iti55.ACTION, iti55.RESPONSE_ACTION, iti55.BODY_ROOT, iti55.handle),
    "ITI-38": Route("ITI-38", iti38.ACTION, iti38.RESPONSE_ACTION, iti38.BODY_ROOT, iti38.handle),
    "ITI-18": Route(
        "ITI-18", iti38.ITI18_ACTION, iti38.ITI18_RESPONSE_ACTION, iti38.BODY_ROOT, iti38.handle
    ),
    "ITI-39": Route("ITI-39", iti39.ACTION, iti39.RESPONSE_ACTION, iti39.BODY_ROOT, iti39.handle),
    "ITI-43": Route(
        "ITI-43", iti39.ITI43_ACTION, iti39.ITI43_RESPONSE_ACTION, iti39.BODY_ROOT, iti39.handle
    ),
}
XDS_ALIASES = frozenset({"ITI-18", "ITI-43"})
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/iti47": ("ITI-47", "ITI-47-continue", "ITI-47-cancel"),
    "/iti55": ("ITI-55",),
    "/iti38": ("ITI-38", "ITI-18"),
    "/iti39": ("ITI-39", "ITI-43"),
    "/xca": tuple(ROUTES),
}
_ENDPOINT_DOCS = {
    "/iti47": "ITI-47 PDQv3 query, continuation and cancel",
    "/iti55": "ITI-55 XCPD Cross Gateway Patient Discovery",
    "/iti38": "ITI-38 Cross Gateway Query",
    "/iti39": "ITI-39 Cross Gateway Retrieve, MTOM response",
}
_WSDL_OPERATIONS: dict[str, list[str]] = {
    "/iti47": ["ITI-47", "ITI-47-continue", "ITI-47-cancel"],
    "/iti55": ["ITI-55"],
    "/iti38": ["ITI-38"],
    "/iti39": ["ITI-39"],
    "/xca": ["ITI-38", "ITI-39", "ITI-47", "ITI-47-continue", "ITI-47-cancel", "ITI-55"],
}


class Dispatcher:
    """Turns an HTTP request into a SOAP exchange, a reply or a fault. Never raises."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw

    @property
    def settings(self) -> Settings:
        s: Settings = self.app.state.settings
        return s

    @property
    def security(self) -> SecurityRuntime:
        sec: SecurityRuntime = self.app.state.security
        return sec

    async def handle(self, request: Request, endpoint: str) -> Response:
        start = time.perf_counter()
        relates_to: str | None = None
        transaction = endpoint.strip("/").upper()
        caller: Caller | None = None
        env: Envelope | None = None
        addressing: Addressing | None = None
        route: Route | None = None
        exchange: Exchange | None = None
        try:
            # Issue #9: the partner comes from its verified certificate, before the body is read;
            # an unknown partner gets a fault and nothing of its message is processed.
            caller = self.security.gate.identify(request.scope)
            partner_id_var.set(caller.partner.id)
            env = await self._read(request)
            relates_to = read_message_id(env)
            # SOAP 1.2 Part 1 §2.6: mustUnderstand is checked before anything is processed.
            check_must_understand(env)
            addressing = read_addressing(env)
            route = self._route(endpoint, addressing.action or "", env.payload)
            transaction = route.transaction
            # Permission, rate limit, then the XUA signature (the costly check last).
            identity = await self.security.gate.admit(
                caller, transaction, env.root, endpoint_audiences=self._audiences(request, endpoint)
            )
            exchange = self._exchange(route, env, addressing, caller, identity)
            self._check_resource_id(exchange)
            if not addressing.anonymous_reply:
                return self._accept_async(route, exchange, request, endpoint)
            reply = await route.handler(self.gateway, exchange)
            # ATNA: the audit record is buffered before the response (and its data) leaves.
            await self._audit_or_withhold(request, endpoint, exchange, reply)
            SOAP_REQUESTS.labels(transaction, reply.outcome).inc()
            body, content_type = self._render(route, reply, relates_to)
            return Response(body, 200, headers={"content-type": content_type})
        except (SecurityError, RateLimited) as err:
            if isinstance(err, SecurityError) and route and env and addressing and caller:
                # A refused attempt at a known transaction is a security-relevant event.
                refused = exchange or self._exchange(route, env, addressing, caller, None)
                await self._audit_quietly(
                    request, endpoint, refused, OUTCOME_SERIOUS_FAILURE, err.metric_reason
                )
            return self.fault_response(security_fault(err), relates_to, transaction)
        except AuditUnavailable:
            log.error("ATNA audit could not be buffered: response withheld")
            fault = receiver("The gateway could not record the audit trail; try again later.")
            return self.fault_response(fault, relates_to, transaction)
        except SoapFault as fault:
            if exchange is not None:
                await self._audit_quietly(
                    request, endpoint, exchange, OUTCOME_SERIOUS_FAILURE, "fault"
                )
            return self.fault_response(fault, relates_to, transaction)
        except Exception:
            log.exception("unhandled error in SOAP endpoint")
            if exchange is not None:
                await self._audit_quietly(
                    request, endpoint, exchange, OUTCOME_MAJOR_FAILURE, "internal error"
                )
            return self.fault_response(receiver(), relates_to, transaction)
        finally:
            SOAP_LATENCY.labels(transaction).observe(time.perf_counter() - start)

    # ---- security and audit (issue #9) ---------------------------------------------------------
    def _endpoint_url(self, request: Request, endpoint: str) -> str:
        base = self.settings.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
        return f"{base}{endpoint}"

    def _audiences(self, request: Request, endpoint: str) -> list[str]:
        """SAML audiences that name this gateway: its public endpoint and base URLs.

        Only from configuration, never from the Host header: a partner could otherwise replay an
        assertion meant for another relying party by naming that party's host.
        """
        base = self.settings.public_base_url.rstrip("/")
        return [f"{base}{endpoint}", base, f"{base}/"] if base else []

    @staticmethod
    def _check_resource_id(exchange: Exchange) -> None:
        """ihe-xca-rules §10.1: the asserted resource-id must be the patient asked about."""
        identity = exchange.xua
        if identity is None or not identity.verified or exchange.partner_config is None:
            return
        ids = [
            p.split("^", 1)[0]
            for p in auditing.request_patients(exchange.transaction, exchange.payload)
        ]
        check_resource_id(identity, exchange.partner_config, ids)

    async def _audit(
        self, request: Request, endpoint: str, exchange: Exchange, reply: Reply | None
    ) -> None:
        """Buffer the exchange's audit record (raises AuditUnavailable)."""
        queue = self.security.audit
        if queue is None or exchange.transaction not in auditing.AUDITED:
            return
        record = auditing.audit_record(
            exchange,
            reply=reply,
            source_ip=request.client.host if request.client else "",
            destination_url=self._endpoint_url(request, endpoint),
            our_hcid=self.settings.hcid,
        )
        await queue.enqueue(record)

    async def _audit_or_withhold(
        self, request: Request, endpoint: str, exchange: Exchange, reply: Reply
    ) -> None:
        """Audit a reply. If Redis cannot take the record, a reply that discloses data is
        withheld (AuditUnavailable propagates); a failure reply, which discloses nothing, still
        goes out (ihe-xca-rules §2: a Redis outage is a RegistryError / AE, never a 500)."""
        try:
            await self._audit(request, endpoint, exchange, reply)
        except AuditUnavailable:
            if reply.outcome != "failure":
                raise
            AUDIT_MESSAGES.labels("lost").inc()
            log.error("ATNA audit of a failure reply could not be buffered (nothing disclosed)")

    async def _audit_quietly(
        self, request: Request, endpoint: str, exchange: Exchange, outcome: int, why: str
    ) -> None:
        """Audit a failed exchange; the fault goes out whether or not this works."""
        queue = self.security.audit
        if queue is None or exchange.transaction not in auditing.AUDITED:
            return
        record = auditing.audit_record(
            exchange,
            reply=None,
            outcome=outcome,
            outcome_description=why,
            source_ip=request.client.host if request.client else "",
            destination_url=self._endpoint_url(request, endpoint),
            our_hcid=self.settings.hcid,
        )
        try:
            await queue.enqueue(record)
        except AuditUnavailable:
            AUDIT_MESSAGES.labels("lost").inc()
            log.error("ATNA audit of a failed exchange could not be buffered")

    async def _read(self, request: Request) -> Envelope:
        limit = self.settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise sender(f"Request larger than {limit} bytes", http_status=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise sender(f"Request larger than {limit} bytes", http_status=413)
            chunks.append(chunk)
        inbound = decode_http_body(
            request.headers.get("content-type"),
            b"".join(chunks),
            max_parts=self.settings.max_mime_parts,
        )
        try:
            root = parse_untrusted(
                inbound.envelope, max_bytes=limit, max_depth=self.settings.max_xml_depth
            )
        except XmlRejected as exc:
            raise sender(str(exc)) from None
        resolve_xop(root, inbound.attachments)
        return read_envelope(root)

    def _route(self, endpoint: str, action: str, payload: etree._Element) -> Route:
        allowed = ENDPOINTS[endpoint]
        for route_id in allowed:
            route = ROUTES[route_id]
            if route.action != action:
                continue
            if route_id in XDS_ALIASES and not self.settings.accept_xds_actions:
                break
            if payload.tag != route.body_root:
                # ihe-xca-rules §1.2: the Action must match the Body root.
                raise sender(
                    f"wsa:Action {action} does not match the Body element "
                    f"{etree.QName(payload).localname}",
                    wsa_subcode=ACTION_NOT_SUPPORTED,
                )
            return route
        raise sender(
            f"wsa:Action {action} is not supported at this endpoint",
            wsa_subcode=ACTION_NOT_SUPPORTED,
        )

    def _exchange(
        self,
        route: Route,
        env: Envelope,
        addressing: Addressing,
        caller: Caller,
        xua: XuaIdentity | None,
    ) -> Exchange:
        registered = sorted(caller.partner.home_community_ids)
        # The verified assertion's HCID first, then the partner's registered one, and only for
        # partners without either the XCPD sender device named in the message.
        initiating = (
            (xua.home_community_id if xua else "")
            or (registered[0] if len(registered) == 1 else "")
            or _xcpd_initiator(env.payload)
        )
        partner = caller.partner.id
        ctx = _context(addressing, xua, initiating, partner, route.transaction)
        correlation_id_var.set(ctx.correlation_id)
        partner_id_var.set(partner)
        span = trace.get_current_span()
        span.set_attribute("xcagw.ihe.transaction", route.transaction)
        span.set_attribute("xcagw.ws.message_id", ctx.correlation_id)
        return Exchange(
            transaction=route.transaction,
            action=route.action,
            response_action=route.response_action,
            envelope=env,
            addressing=addressing,
            xua=xua,
            context=ctx,
            partner=partner,
            partner_config=caller.partner,
        )

    def _render(
        self, route: Route, reply: Reply, relates_to: str | None, to: str | None = None
    ) -> tuple[bytes, str]:
        action = reply.action or route.response_action
        envelope = build_envelope(response_headers(action, relates_to, to=to), reply.payload)
        if reply.mtom:
            return package_mtom(envelope, reply.attachments, MTOM_DOMAIN)
        return envelope, f'{SOAP_CONTENT_TYPE}; action="{action}"'

    def fault_response(
        self, fault: SoapFault, relates_to: str | None, transaction: str
    ) -> Response:
        body, status = render_fault(fault, relates_to)
        subcode = fault.wsa_subcode or (fault.subcode[2] if fault.subcode else "")
        SOAP_FAULTS.labels(fault.code.value, subcode).inc()
        SOAP_REQUESTS.labels(transaction, "fault").inc()
        if fault.code is FaultCode.RECEIVER:
            log.error("SOAP fault", extra={"ecs": {"xcagw.fault.code": fault.code.value}})
        else:
            log.info(
                "SOAP fault",
                extra={
                    "ecs": {
                        "xcagw.fault.code": fault.code.value,
                        "xcagw.fault.reason": fault.reason,
                    }
                },
            )
        return Response(
            body, status, headers={"content-type": SOAP_CONTENT_TYPE, **fault.http_headers}
        )

    # ---- XCA asynchronous exchange option (ihe-xca-rules §1.4) ----------------------------------
    def _accept_async(
        self, route: Route, exchange: Exchange, request: Request, endpoint: str
    ) -> Response:
        reply_to = exchange.addressing.reply_to
        # The partner registry's ReplyTo allow-list, plus the gateway-wide one.
        allowlist = list(self.settings.async_reply_allowlist)
        if exchange.partner_config is not None:
            allowlist += exchange.partner_config.config.async_reply_to
        if not self.settings.async_replies_enabled or not reply_allowed(reply_to, allowlist):
            fault = sender(
                "Only the anonymous ReplyTo address is supported for this partner",
                wsa_subcode=ONLY_ANONYMOUS,
            )
            fault.problem_header = q(WSA, "ReplyTo")
            raise fault
        # Acknowledge now; deliver the response once to the allow-listed https address.
        return Response(
            status_code=202,
            background=BackgroundTask(self._deliver, route, exchange, reply_to, request, endpoint),
        )

    async def _deliver(
        self, route: Route, exchange: Exchange, address: str, request: Request, endpoint: str
    ) -> None:
        relates_to = exchange.message_id
        try:
            reply = await route.handler(self.gateway, exchange)
            await self._audit_or_withhold(request, endpoint, exchange, reply)
            SOAP_REQUESTS.labels(route.transaction, reply.outcome).inc()
            body, content_type = self._render(route, reply, relates_to, to=address)
        except AuditUnavailable:
            log.error("ATNA audit could not be buffered: async response withheld")
            body, _ = render_fault(receiver(), relates_to)
            content_type = SOAP_CONTENT_TYPE
        except Exception:
            log.exception("async exchange failed")
            body, _ = render_fault(receiver(), relates_to)
            content_type = SOAP_CONTENT_TYPE
        client: httpx.AsyncClient = self.app.state.http
        try:
            # Exactly one delivery attempt: a retry could deliver the response twice.
            resp = await client.post(address, content=body, headers={"content-type": content_type})
            log.info(
                "async reply delivered",
                extra={"ecs": {"http.response.status_code": resp.status_code}},
            )
        except httpx.HTTPError:
            log.warning("async reply delivery failed")


class DispatchApp:
    """ASGI app that hands every request to the Dispatcher (which never raises)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # As Starlette sets it, also when SoapEndpoints runs outside FastAPI (build_server).
        scope["app"] = self.dispatcher.app
        response = await self.dispatcher.handle(Request(scope, receive), scope["path"])
        await response(scope, receive, send)


class SoapEndpoints:
    """Pure ASGI: a POST to a SOAP endpoint goes to `soap`, anything else to `app`.

    Used twice. Inside FastAPI's stack (create_app), `soap` is the DispatchApp: SOAP POSTs skip
    the router, dependency and exception layers. As the partner listener's outermost app
    (soap_edge.__main__.build_server), `app` is the FastAPI app and `soap` the endpoints' own
    short chain (server span, HardeningMiddleware, DispatchApp), so a partner request does not
    cross FastAPI's middleware stack either: Starlette's error middleware, the instrumentor's
    ASGI middleware (which excludes these paths anyway), FastAPI's native telemetry and
    body-limit layers cost about 7 % of a cached request (benchmarks/PROFILE.md section 7) and do
    nothing for it, as the Dispatcher answers every failure with a SOAP fault and enforces its
    own body limit. Lifespan events, GETs and every other path reach `app` unchanged.
    """

    def __init__(self, app: ASGIApp, soap: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.soap = soap
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            await self.soap(scope, receive, send)
            return
        await self.app(scope, receive, send)


def soap_chain(app: FastAPI, settings: Settings) -> ASGIApp:
    """HardeningMiddleware around the Dispatcher: what a SOAP POST needs besides its span."""
    return HardeningMiddleware(DispatchApp(app.state.dispatcher), config=hardening_config(settings))


def render_fault(fault: SoapFault, relates_to: str | None) -> tuple[bytes, int]:
    headers = response_headers(fault.action, relates_to)
    headers += not_understood_headers(fault)
    if fault.code is FaultCode.VERSION_MISMATCH:
        headers.append(upgrade_header())
    return build_envelope(headers, build_fault_element(fault)), fault.status


def reply_allowed(address: str, allowlist: list[str]) -> bool:
    """https only, and scheme/host/port equal to an allow-listed prefix whose path it extends."""
    try:
        target = urlsplit(address)
        if target.scheme != "https" or not target.hostname:
            return False
        for entry in allowlist:
            allowed = urlsplit(entry)
            if (
                allowed.scheme == "https"
                and allowed.hostname == target.hostname
                and (allowed.port or 443) == (target.port or 443)
                and target.path.startswith(allowed.path or "/")
            ):
                return True
    except ValueError:
        return False
    return False


_XCPD_INITIATOR_ROOT = etree.XPath(
    "h:controlActProcess/h:authorOrPerformer/h:assignedDevice/h:id/@root", namespaces={"h": HL7}
)


def _xcpd_initiator(payload: etree._Element) -> str:
    """The initiating gateway's HCID from controlActProcess/authorOrPerformer (XCPD, verify)."""
    if payload.tag != q(HL7, "PRPA_IN201305UV02"):
        return ""
    ids = _XCPD_INITIATOR_ROOT(payload)
    return normalise_hcid(str(ids[0])) if ids else ""


def _context(
    addressing: Addressing,
    xua: XuaIdentity | None,
    initiating: str,
    partner: str,
    transaction: str,
) -> common_pb2.RequestContext:
    """The RequestContext every backend call carries; the requester is the XUA subject (and so
    the GP Connect JWT's requesting_practitioner)."""
    ctx = common_pb2.RequestContext(
        correlation_id=addressing.message_id or "",
        partner_id=partner,
        home_community_id=initiating,
        transaction=transaction,
    )
    if xua is not None:
        ctx.user_id = xua.subject_id
        ctx.user_name = xua.subject_id
        ctx.user_role = xua.role_code
        ctx.organization_name = xua.organization
        ctx.organization_id = xua.organization_id
        ctx.purpose_of_use = xua.purpose_of_use
    return ctx


async def _ready(app: FastAPI) -> tuple[bool, dict[str, str]]:
    gw: Gateway = app.state.gateway
    timeout = gw.settings.readiness_timeout_seconds

    async def redis_ok() -> bool:
        try:
            return await asyncio.wait_for(gw.store.ping(), timeout)
        except Exception:  # any failure means not ready; the reason is in the Redis client log
            return False

    names = [PDS, GPCONNECT, CCDA, TOKEN]
    results = await asyncio.gather(redis_ok(), *(gw.backends.health(n, timeout) for n in names))
    checks = {"redis": results[0], **dict(zip(names, results[1:], strict=True))}
    return all(checks.values()), {k: "ok" if v else "failing" for k, v in checks.items()}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Clients are created here (not at import): Redis, one gRPC channel per backend, httpx."""
    settings: Settings = app.state.settings
    redis = create_redis(
        settings.redis_url.get_secret_value(), timeout=settings.readiness_timeout_seconds * 2
    )
    backends = Backends(settings)
    store = Store(redis, settings)
    app.state.gateway = Gateway(
        settings, store, backends, DocumentService(settings, store, backends)
    )
    # Partner registry (a bad one stops start-up), rate limiter, XUA verifier, ATNA forwarder.
    app.state.security = SecurityRuntime.start(settings, redis)
    app.state.http = httpx.AsyncClient(
        timeout=settings.async_reply_timeout_seconds, follow_redirects=False
    )
    try:
        yield
    finally:
        await app.state.http.aclose()
        await app.state.security.stop()
        await backends.close()
        await redis.aclose()


_WSDL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "WSDL 1.1.", "content": {"text/xml": {"schema": {"type": "string"}}}},
    405: {
        "description": "SOAP Sender fault: GET without ?wsdl.",
        "content": {"application/soap+xml": {"schema": {"type": "string", "format": "xml"}}},
    },
}
_JSON_STATUS = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
            "required": ["status"],
        }
    }
}
_SOAP_ENVELOPE = {"application/soap+xml": {"schema": {"type": "string", "format": "xml"}}}
_SOAP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "SOAP 1.2 response; business errors (RegistryError, HL7 AE/NF) are here "
        "too. ITI-39 answers multipart/related (MTOM/XOP).",
        "content": {
            **_SOAP_ENVELOPE,
            "multipart/related": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    202: {"description": "Accepted: the response goes to the allow-listed wsa:ReplyTo."},
    400: {
        "description": "SOAP Sender fault (addressing, security, malformed message).",
        "content": _SOAP_ENVELOPE,
    },
    413: {"description": "SOAP Sender fault: body over the size cap.", "content": _SOAP_ENVELOPE},
    415: {"description": "SOAP Sender fault: not SOAP 1.2 or MTOM.", "content": _SOAP_ENVELOPE},
    429: {
        "description": "SOAP Receiver fault: partner rate limit; see Retry-After.",
        "content": _SOAP_ENVELOPE,
    },
    500: {
        "description": "SOAP Receiver, VersionMismatch or MustUnderstand fault.",
        "content": _SOAP_ENVELOPE,
    },
}


def _internal_routes(target: FastAPI, main: FastAPI) -> None:
    """/health/live, /health/ready, /metrics and /openapi.json of `main`, served by `target`."""

    @target.get(
        "/health/live",
        summary="Liveness (no I/O)",
        responses={200: {"description": "The process is up.", "content": _JSON_STATUS}},
        tags=["operations"],
    )
    async def live() -> JSONResponse:
        return JSONResponse({"status": "live"})

    @target.get(
        "/health/ready",
        summary="Readiness: Redis ping and gRPC health of the four backends",
        responses={
            200: {"description": "Ready to serve partners.", "content": _JSON_STATUS},
            503: {"description": "A dependency is down.", "content": _JSON_STATUS},
        },
        tags=["operations"],
    )
    async def ready() -> JSONResponse:
        ok, checks = await _ready(main)
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503
        )

    @target.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        tags=["operations"],
    )
    async def metrics() -> Response:
        return Response(generate_latest(), headers={"content-type": CONTENT_TYPE_LATEST})

    @target.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(openapi_document(main))


def openapi_document(main: FastAPI) -> dict[str, Any]:
    """OpenAPI 3 description of soap-edge's HTTP surface (SOAP endpoints, WSDL, operations)."""
    cached: dict[str, Any] | None = getattr(main.state, "openapi_document", None)
    if cached is None:
        cached = get_openapi(
            title="soap-edge",
            version=_dist_version("xcagw-soap-edge"),
            description=(
                "IHE XCA/XCPD/PDQv3 responding gateway. SOAP 1.2 endpoints (plain or MTOM) per "
                "transaction and /xca dispatching by wsa:Action; GET <endpoint>?wsdl; health and "
                "metrics (on the management listener when one is configured)."
            ),
            routes=main.routes,
        )
        main.state.openapi_document = cached
    return cached


def create_management_app(main: FastAPI) -> FastAPI:
    """The management listener (SOAP_EDGE_MANAGEMENT_PORT): health and metrics of `main`."""
    app = FastAPI(title="soap-edge management", docs_url=None, redoc_url=None, openapi_url=None)
    _internal_routes(app, main)
    return app


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="soap-edge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    dispatcher = Dispatcher(app)
    app.state.dispatcher = dispatcher
    # SOAP POSTs skip FastAPI's routing, dependency and exception layers (a third of a cached
    # request's CPU, benchmarks/PROFILE.md): the routes below stay for OpenAPI and the WSDL GETs.
    app.add_middleware(SoapEndpoints, soap=DispatchApp(dispatcher), paths=frozenset(ENDPOINTS))
    # Outermost: security headers, no banner, CORS, header/body limits, internal paths.
    app.add_middleware(HardeningMiddleware, config=hardening_config(settings))

    def soap_post(path: str) -> None:
        async def endpoint(request: Request) -> Response:
            return await dispatcher.handle(request, path)

        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=f"SOAP 1.2 request ({_ENDPOINT_DOCS.get(path, 'dispatch by wsa:Action')})",
            openapi_extra={"requestBody": {"required": True, "content": _SOAP_ENVELOPE}},
            responses=_SOAP_RESPONSES,
            response_class=Response,
            tags=["partners"],
            operation_id=f"soap_{path.strip('/')}",
        )

        async def wsdl(request: Request) -> Response:
            if "wsdl" not in {k.lower() for k in request.query_params}:
                fault = sender("Use POST for SOAP requests, or GET ?wsdl", http_status=405)
                return dispatcher.fault_response(fault, None, path.strip("/").upper())
            base = settings.public_base_url.rstrip("/")
            address = f"{base}{path}" if base else str(request.url.replace(query=""))
            body = build_wsdl(path.strip("/").upper(), _WSDL_OPERATIONS[path], address)
            return Response(body, 200, headers={"content-type": "text/xml; charset=UTF-8"})

        app.add_api_route(
            path,
            wsdl,
            methods=["GET"],
            summary="WSDL of this endpoint (query parameter `wsdl`), with our address",
            response_class=Response,
            responses=_WSDL_RESPONSES,
            tags=["partners"],
            operation_id=f"wsdl_{path.strip('/')}",
        )

    for path in ENDPOINTS:
        soap_post(path)

    # On the partner listener only for internal_endpoint_cidrs, and not at all once a
    # management listener is configured (HardeningMiddleware decides).
    _internal_routes(app, app)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        reason = "No SOAP endpoint at this address" if status == 404 else "Request not allowed here"
        fault = sender(reason, http_status=status) if status < 500 else receiver()
        return dispatcher.fault_response(fault, None, "HTTP")

    async def unhandled(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return dispatcher.fault_response(receiver(), None, "HTTP")

    # Never a JSON or HTML error, never a stack trace (ihe-xca-rules §2).
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unhandled)
    return app
