"""One trace per partner request: an ITI-38 cache miss is stitched across all five services."""

from __future__ import annotations

import secrets

from xcagw_devstack.launcher import Stack
from xcagw_devstack.otlp_sink import OtlpSink, SpanRecord, has_edge
from xcagw_devstack.partner import PartnerClient, documents_in, find_documents

# 9000000017 is not queried by any other e2e test, so its ITI-38 is a cache miss here.
PATIENT = "9000000017"
SERVICES = {"soap-edge", "pds-adapter", "gpconnect-adapter", "token-service", "ccda-converter"}
EDGES = [
    ("soap-edge", "pds-adapter"),
    ("soap-edge", "gpconnect-adapter"),
    ("gpconnect-adapter", "token-service"),
    ("soap-edge", "ccda-converter"),
]


async def test_iti38_cache_miss_is_one_trace_across_every_service(
    stack: Stack, otlp_sink: OtlpSink
) -> None:
    trace_id = secrets.token_hex(16)
    parent_span = secrets.token_hex(8)
    client = PartnerClient(stack.soap_edge_url)
    try:
        reply = await client.send(
            "iti38",
            find_documents(f"{PATIENT}^^^&2.16.840.1.113883.2.1.4.1&ISO"),
            headers={"traceparent": f"00-{trace_id}-{parent_span}-01"},
        )
    finally:
        await client.aclose()
    assert documents_in(reply), "the cache miss produced no DocumentEntry"

    def stitched(spans: list[SpanRecord]) -> bool:
        in_trace = [s for s in spans if s.trace_id == trace_id]
        # soap-edge's server span ends last, so it may arrive in a later export batch.
        root_seen = any(
            s.parent_span_id == parent_span and s.service_name == "soap-edge" for s in in_trace
        )
        return (
            root_seen
            and {s.service_name for s in in_trace} >= SERVICES
            and all(has_edge(in_trace, trace_id, parent, child) for parent, child in EDGES)
        )

    spans = otlp_sink.wait_for(stitched, timeout=30)
    in_trace = [s for s in spans if s.trace_id == trace_id]
    # The incoming W3C traceparent was honoured: soap-edge's server span hangs off it.
    assert any(s.parent_span_id == parent_span and s.service_name == "soap-edge" for s in in_trace)
    for parent, child in EDGES:
        assert has_edge(in_trace, trace_id, parent, child), (parent, child)
    # Never patient identifiers in span names or attributes.
    for span in in_trace:
        assert PATIENT not in span.name
        assert PATIENT not in repr(span.attributes), (span.service_name, span.name)
