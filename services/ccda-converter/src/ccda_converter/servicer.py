"""gRPC CcdaConverterService: ConvertBundle and RenderHtml.

The conversion is CPU-bound; it runs in an executor (a process pool in production) so the event
loop keeps answering health checks and other RPCs. Bad input -> INVALID_ARGUMENT with a clear
message; never a stack trace to the caller.

A process pool is broken for good once one of its workers dies (OOM-killed on a huge bundle, or
killed by hand): every later submit raises BrokenProcessPool. So the servicer replaces a broken
pool from ``executor_factory`` and retries the call once on the new pool; a second death (the input
itself kills the worker) is RESOURCE_EXHAUSTED, and the pool is replaced again for the next call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import grpc

from ccda_converter.bundle import BundleError
from ccda_converter.codes import is_oid
from ccda_converter.convert import convert_bundle
from ccda_converter.dmd import DmdEnricher, medication_codes
from ccda_converter.model import ConversionResult, ConvertOptions
from ccda_converter.render import RenderError, render_html
from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw_common.errors import abort

log = logging.getLogger(__name__)

SERVICE_NAME = "xcagw.ccda.v1.CcdaConverterService"


def convert_worker(data: bytes, options: ConvertOptions) -> ConversionResult:
    """Executor entry point (top-level so a process pool can pickle it)."""
    return convert_bundle(data, options=options)


def codes_worker(data: bytes) -> set[str]:
    """dm+d codes of a bundle, parsed in the executor."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return set()
    return medication_codes(parsed) if isinstance(parsed, dict) else set()


def render_worker(data: bytes) -> str:
    return render_html(data)


def ping_worker() -> bool:
    return True


class WorkerDied(RuntimeError):
    """A worker process died on the call and again on its retry in a new pool."""


class CcdaConverterServicer(ccda_converter_pb2_grpc.CcdaConverterServiceServicer):
    """Typed async implementation of xcagw.ccda.v1.CcdaConverterService."""

    def __init__(
        self,
        *,
        executor: Executor,
        executor_factory: Callable[[], Executor] | None = None,
        enricher: DmdEnricher | None = None,
        document_id_root: str = "",
        max_bundle_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        """``executor_factory`` makes the replacement of a broken process pool; without it a
        broken pool is not replaced (every call then fails with WorkerDied)."""
        self.executor = executor
        self.executor_factory = executor_factory
        self.enricher = enricher
        self.document_id_root = document_id_root
        self.max_bundle_bytes = max_bundle_bytes

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the executor; a broken pool is replaced and the call retried once."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            executor = self.executor
            try:
                return await loop.run_in_executor(executor, fn, *args)
            except BrokenProcessPool:
                log.warning("a conversion worker process died (attempt %d)", attempt)
                if not self._replace(executor):
                    break
        raise WorkerDied("a conversion worker process died")

    def _replace(self, broken: Executor) -> bool:
        """Swap in a new pool for ``broken``; False when there is no factory to make one."""
        if self.executor is not broken:
            return True  # a concurrent call that saw the same death has replaced it already
        if self.executor_factory is None:
            return False
        self.executor = self.executor_factory()
        # Its workers are dead or being terminated by the pool itself: nothing to wait for.
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("replaced the broken worker process pool")
        return True

    async def ping(self) -> None:
        """Readiness: a worker answers (replacing a broken pool on the way)."""
        await self._run(ping_worker)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def ConvertBundle(  # noqa: N802 - gRPC method name
        self,
        request: ccda_converter_pb2.ConvertBundleRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ccda_converter_pb2.ConvertBundleResponse:
        data = bytes(request.bundle_json)
        if not data:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "bundle_json is empty", "EMPTY_BUNDLE"
            )
        if len(data) > self.max_bundle_bytes:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"bundle_json is {len(data)} bytes; the limit is {self.max_bundle_bytes}",
                "BUNDLE_TOO_LARGE",
            )
        root = (request.document_id_root or self.document_id_root).strip().removeprefix("urn:oid:")
        if root and not is_oid(root):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "document_id_root must be an OID (e.g. 2.16.840.1.113883.3.9999.1)",
                "INVALID_DOCUMENT_ID_ROOT",
            )
        try:
            dmd: dict[str, Any] = {}
            if request.enrich_dmd and self.enricher is not None:
                codes = await self._run(codes_worker, data)
                dmd = await self.enricher.lookup(codes)
            options = ConvertOptions(
                document_id_root=root,
                recipient_organization_name=request.context.organization_name,
                recipient_organization_id=request.context.organization_id,
                dmd=dmd,
            )
            started = time.perf_counter()
            result: ConversionResult = await self._run(convert_worker, data, options)
        except BundleError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_BUNDLE")
        except WorkerDied:
            # On the call and on its retry in a fresh pool: most likely this input needs more
            # memory than a worker may use. Not UNAVAILABLE: retrying the same bundle won't help.
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "a conversion worker process died converting this bundle "
                "(it may be too large to convert)",
                "WORKER_DIED",
            )
        except Exception as exc:  # noqa: BLE001 - report a clean INTERNAL, log the type only
            log.exception("conversion failed: %s", type(exc).__name__)
            await abort(context, grpc.StatusCode.INTERNAL, "conversion failed", "CONVERSION_FAILED")
        log.info(
            "converted bundle",
            extra={
                "ecs": {
                    "labels.entries": result.entry_count,
                    "labels.coded_ratio": round(result.coded_ratio, 4),
                    "event.duration": int((time.perf_counter() - started) * 1e9),
                }
            },
        )
        return ccda_converter_pb2.ConvertBundleResponse(
            ccd_xml=result.ccd_xml,
            document_id=result.document_id,
            coverage=[
                ccda_converter_pb2.CoverageCount(
                    resource_type=c.resource_type,
                    mapped=c.mapped,
                    narrative_only=c.narrative_only,
                    skipped=c.skipped,
                    skip_reasons=sorted(set(c.skip_reasons)),
                )
                for c in sorted(result.coverage.values(), key=lambda c: c.resource_type)
            ],
            warnings=result.warnings,
        )

    async def RenderHtml(  # noqa: N802 - gRPC method name
        self,
        request: ccda_converter_pb2.RenderHtmlRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ccda_converter_pb2.RenderHtmlResponse:
        data = bytes(request.ccd_xml)
        if not data:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ccd_xml is empty", "EMPTY_CCD")
        try:
            page: str = await self._run(render_worker, data)
        except RenderError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_CCD")
        except WorkerDied:
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "a worker process died rendering this CCD (it may be too large to render)",
                "WORKER_DIED",
            )
        except Exception as exc:  # noqa: BLE001
            log.exception("render failed: %s", type(exc).__name__)
            await abort(context, grpc.StatusCode.INTERNAL, "render failed", "RENDER_FAILED")
        return ccda_converter_pb2.RenderHtmlResponse(html=page)
