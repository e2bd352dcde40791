"""A full component run of secured soap-edge (signed XUA, partner certificate, ATNA to a TLS
ARR, the ITI-47 -> ITI-38 -> ITI-39 flow, restricted and unknown patients, refusals): no NHS
number and no security token (SAML signature, assertion, certificates) appears in any log
record or span. The ATNA audit messages are the one place NHS numbers belong.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from soap_edge_security_kit import (  # fixtures are imported to be registered here
    DS,
    Pki,
    app_factory,
    arr,
    arr_settings,
    build_assertion,
    cert_header,
    default_attributes,
    pki,
    send,
    sign,
)
from soap_edge_testkit import (
    HCID,
    JANE,
    JAYNE,
    NHS_OID,
    REPO,
    RESTRICTED,
    UNIQUE_ID,
    UNKNOWN,
    find_documents,
    pdq_body,
    read_response,
    retrieve_body,
)

from xcagw_common.logging import EcsJsonFormatter
from xcagw_devstack.syslog_sink import SyslogSink

__all__ = ["app_factory", "arr", "pki"]  # imported fixtures, used by name

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    grpc_client = GrpcAioInstrumentorClient()
    redis_instr = RedisInstrumentor()
    grpc_client.instrument(tracer_provider=provider)
    redis_instr.instrument(tracer_provider=provider, sanitize_query=True)
    exporter.provider = provider  # type: ignore[attr-defined]
    yield exporter
    grpc_client.uninstrument()
    redis_instr.uninstrument()
    provider.shutdown()


async def test_no_nhs_number_or_token_in_logs_or_spans(
    app_factory: Any,
    pki: Pki,
    arr: SyslogSink,
    fakes: Any,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []

    def assertion(nhs: str = JANE, **kwargs: Any) -> Any:
        signed = sign(build_assertion(attributes=default_attributes(nhs), **kwargs), pki.issuer)
        tokens.append(str(signed.findtext(f".//{{{DS}}}SignatureValue")).strip())
        tokens.append(str(signed.get("ID")))
        return signed

    running = app_factory(**arr_settings(pki, arr))
    FastAPIInstrumentor.instrument_app(running.app, tracer_provider=spans.provider)  # type: ignore[attr-defined]
    headers = cert_header(pki)
    async with running as client:
        for nhs in (JANE, JAYNE):
            pdq = await send(
                client,
                "/iti47",
                PDQ,
                pdq_body(ids=[(NHS_OID, nhs)]),
                assertions=(assertion(nhs),),
                headers=headers,
            )
            assert pdq.status_code == 200
            found = await send(
                client,
                "/iti38",
                XCQ,
                find_documents(nhs),
                assertions=(assertion(nhs),),
                headers=headers,
            )
            uid = read_response(found).xpath(UNIQUE_ID)
            got = await send(
                client,
                "/iti39",
                XCR,
                retrieve_body((HCID, REPO, uid)),
                assertions=(assertion(nhs),),
                headers=headers,
            )
            assert got.status_code == 200 and read_response(got).attachments
        for nhs in (RESTRICTED, UNKNOWN):
            await send(
                client,
                "/iti38",
                XCQ,
                find_documents(nhs),
                assertions=(assertion(nhs),),
                headers=headers,
            )
        # Refusals: a tampered assertion and an unknown partner certificate.
        bad = assertion()
        bad.find(f".//{{{DS}}}SignatureValue").text = "AAAA" + tokens[-2][4:]
        await send(client, "/iti38", XCQ, find_documents(JANE), assertions=(bad,), headers=headers)
        await send(
            client,
            "/iti38",
            XCQ,
            find_documents(JANE),
            assertions=(assertion(),),
            headers=cert_header(pki, "stranger"),
        )
        # 6 flow steps, 2 unknown/restricted queries, the tampered one; the stranger is not
        # audited (refused before its message is read).
        audits = await asyncio.to_thread(arr.wait_for, 9)
        FastAPIInstrumentor.uninstrument_app(running.app)

    secrets = {JANE, JAYNE, RESTRICTED, UNKNOWN, *tokens}
    for pair in (pki.partner, pki.stranger, pki.issuer):
        der = pair.cert.public_bytes(Encoding.DER)
        secrets.add(base64.b64encode(der).decode()[40:120])  # certificate body material

    formatter = EcsJsonFormatter("soap-edge")
    log_lines = [formatter.format(r) for r in caplog.records]
    assert log_lines, "the run logged nothing to scan"
    finished = spans.get_finished_spans()
    assert finished, "the run produced no spans to scan"
    span_blobs = [
        repr(
            (
                s.name,
                dict(s.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in s.events],
            )
        )
        for s in finished
    ]
    for text in (*log_lines, *span_blobs):
        leaked = sorted(s for s in secrets if s and s in text)
        assert leaked == [], (leaked, text[:300])
        assert not JWT.search(text)
    # The audit trail is where they belong.
    assert any(JANE.encode() in m.msg for m in audits)
