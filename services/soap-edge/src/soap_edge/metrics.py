"""Prometheus metrics of soap-edge (served on GET /metrics). Labels never carry patient data."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SOAP_REQUESTS = Counter(
    "xcagw_soap_requests_total",
    "SOAP exchanges by IHE transaction and outcome (success, partial, failure, fault).",
    ["transaction", "outcome"],
)
SOAP_FAULTS = Counter(
    "xcagw_soap_faults_total",
    "SOAP faults returned, by fault code and subcode.",
    ["code", "subcode"],
)
SOAP_LATENCY = Histogram(
    "xcagw_soap_request_seconds",
    "Time to answer a SOAP request, by IHE transaction.",
    ["transaction"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
BACKEND_FAILURES = Counter(
    "xcagw_backend_failures_total", "Failed backend calls by backend and kind.", ["backend", "kind"]
)
DOCUMENTS_GENERATED = Counter(
    "xcagw_documents_generated_total", "C-CDA documents fetched, converted and stored."
)
