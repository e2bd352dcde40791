"""A dead conversion worker process costs one retry, not the service.

A ProcessPoolExecutor is broken for good once one of its workers dies (OOM-killed on a huge
bundle, or killed by hand). These tests kill a real worker (SIGKILL) of the real spawn pool the
server runs, and call the real gRPC server over a socket: the next conversion succeeds on a
replacement pool and readiness stays (or comes back) SERVING. A worker that dies on every attempt
gives RESOURCE_EXHAUSTED with a clear message, and the pool is still replaced for the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import grpc
import pytest
from ccda_testkit import collection, patient, serving

from ccda_converter.config import Settings
from ccda_converter.server import create_app
from ccda_converter.servicer import CcdaConverterServicer, ping_worker
from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw_common.errors import error_reason
from xcagw_common.grpc_client import check_health
from xcagw_common.grpc_server import GrpcApp, serve

BUNDLE = json.dumps(
    collection(patient(pid="p", name_use=None, gender=None, birth_date="1980", practice=None))
).encode()
STARTUP_TIMEOUT = 120.0  # spawning a worker imports lxml, grpc...: slow on a busy CI machine


@contextlib.asynccontextmanager
async def running(readiness_interval: float) -> AsyncIterator[tuple[GrpcApp, str]]:
    """The service as ``ccda-converter serve`` runs it (process pool of one worker)."""
    settings = Settings(
        executor="process",
        workers=1,
        port=0,
        metrics_port=-1,
        terminology_url="",
        document_id_root="2.16.840.1.113883.3.9999.2",
    )
    app = create_app(settings)
    app.readiness_interval_seconds = readiness_interval
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not app.bound_port:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "ccda-converter did not start"
        await asyncio.sleep(0.05)
    try:
        yield app, f"127.0.0.1:{app.bound_port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_serving(channel: grpc.aio.Channel) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not await check_health(channel, deadline_seconds=2.0):
        assert time.monotonic() < deadline, "ccda-converter never became SERVING"
        await asyncio.sleep(0.1)


def kill_the_worker(servicer: CcdaConverterServicer) -> Executor:
    """SIGKILL the pool's only worker; return the pool, checked to be broken by it."""
    pool = servicer.executor
    pid = pool.submit(os.getpid).result(timeout=STARTUP_TIMEOUT)
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        pool.submit(ping_worker).result(timeout=STARTUP_TIMEOUT)
    return pool


async def convert(stub: ccda_converter_pb2_grpc.CcdaConverterServiceStub) -> bytes:
    resp = await stub.ConvertBundle(
        ccda_converter_pb2.ConvertBundleRequest(bundle_json=BUNDLE), timeout=STARTUP_TIMEOUT
    )
    return bytes(resp.ccd_xml)


async def test_next_conversion_after_a_killed_worker_succeeds() -> None:
    # Readiness checks far apart: the conversion itself must find and replace the broken pool.
    async with running(readiness_interval=600.0) as (app, addr):
        servicer: CcdaConverterServicer = app.bindings[0].servicer
        async with grpc.aio.insecure_channel(addr) as channel:
            await wait_serving(channel)
            stub = ccda_converter_pb2_grpc.CcdaConverterServiceStub(channel)
            assert b"SMITH" in await convert(stub)
            broken = kill_the_worker(servicer)
            assert b"SMITH" in await convert(stub)
            assert servicer.executor is not broken
            # And the one after that, on the same replacement pool.
            replacement = servicer.executor
            assert b"SMITH" in await convert(stub)
            assert servicer.executor is replacement


async def test_readiness_recovers_after_a_killed_worker() -> None:
    async with running(readiness_interval=0.2) as (app, addr):
        servicer: CcdaConverterServicer = app.bindings[0].servicer
        async with grpc.aio.insecure_channel(addr) as channel:
            await wait_serving(channel)
            broken = kill_the_worker(servicer)
            # No RPC: the readiness check alone replaces the pool and reports SERVING again.
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while servicer.executor is broken:
                assert time.monotonic() < deadline, "the broken pool was never replaced"
                await asyncio.sleep(0.1)
            await wait_serving(channel)
            stub = ccda_converter_pb2_grpc.CcdaConverterServiceStub(channel)
            assert b"SMITH" in await convert(stub)


def dying_pool() -> Executor:
    """A pool whose worker exits as it starts, as if every input OOM-killed it."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=os._exit,
        initargs=(3,),
    )


def healthy_pool() -> Executor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


async def test_worker_dying_on_the_retry_too_is_a_clear_status() -> None:
    made: list[Executor] = []

    def factory() -> Executor:
        # The pool of the call and the one of its retry die; the next one is healthy.
        made.append(dying_pool() if len(made) < 2 else healthy_pool())
        return made[-1]

    servicer = CcdaConverterServicer(executor=factory(), executor_factory=factory)
    try:
        async with serving(servicer) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await convert(stub)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_reason(err.value) == "WORKER_DIED"
            assert "worker process died" in (err.value.details() or "")
            # The pool broken by the retry was replaced too: the next call works.
            assert len(made) == 3 and servicer.executor is made[2]
            assert b"SMITH" in await convert(stub)
    finally:
        for pool in made:
            pool.shutdown(wait=False, cancel_futures=True)
