"""Serve mode: the gRPC servicer on the shared xcagw_common runtime (health, metrics, shutdown)."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import httpx

from ccda_converter import compiled
from ccda_converter.config import Settings
from ccda_converter.dmd import DmdEnricher
from ccda_converter.servicer import SERVICE_NAME, CcdaConverterServicer
from xcagw.ccda.v1 import ccda_converter_pb2_grpc
from xcagw_common import telemetry
from xcagw_common.grpc_server import GrpcApp, ServicerBinding, serve
from xcagw_common.logging import setup_logging
from xcagw_common.redis import create_redis

log = logging.getLogger(__name__)


def make_executor(settings: Settings) -> Executor:
    if settings.executor == "thread":
        return ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="ccda")
    # spawn, not fork: forking a process that already runs gRPC threads can deadlock.
    return ProcessPoolExecutor(
        max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn")
    )


def create_app(settings: Settings) -> GrpcApp:
    """The service wired from settings; call inside the running event loop.

    Clients are created here (not at import time) and closed by the app's shutdown hooks.
    """
    http = httpx.AsyncClient(timeout=settings.terminology_timeout_seconds)
    redis = (
        create_redis(settings.redis_url.get_secret_value()) if settings.terminology_url else None
    )
    enricher = (
        DmdEnricher(
            settings.terminology_url,
            http=http,
            redis=redis,
            ttl_seconds=settings.dmd_cache_ttl_seconds,
            timeout_seconds=settings.terminology_timeout_seconds,
        )
        if settings.terminology_url
        else None
    )

    def new_executor() -> Executor:
        return make_executor(settings)

    # The factory replaces the process pool when a worker dies (the servicer's docstring).
    servicer = CcdaConverterServicer(
        executor=new_executor(),
        executor_factory=new_executor,
        enricher=enricher,
        document_id_root=settings.document_id_root,
        max_bundle_bytes=settings.max_bundle_bytes,
    )

    async def close() -> None:
        await http.aclose()
        if redis is not None:
            await redis.aclose()
        servicer.shutdown()

    return GrpcApp(
        name="ccda-converter",
        settings=settings,
        bindings=[
            ServicerBinding(
                ccda_converter_pb2_grpc.add_CcdaConverterServiceServicer_to_server,
                servicer,
                SERVICE_NAME,
            )
        ],
        # Redis and the terminology server are optional (enrichment degrades), so readiness
        # only needs the conversion workers.
        readiness_checks=[servicer.ping],
        on_startup=[servicer.ping],
        on_shutdown=[close],
    )


async def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    setup_logging("ccda-converter", settings.log_level)
    provider = telemetry.setup("ccda-converter")
    # Which build runs (the image ships the mypyc-compiled conversion modules; build_mypyc.py).
    log.info("conversion modules: %s", "mypyc-compiled" if compiled() else "Python source")
    try:
        await serve(create_app(settings))
    finally:
        telemetry.shutdown(provider)
