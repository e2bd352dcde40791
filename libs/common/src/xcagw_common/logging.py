"""JSON logs on stdout with ECS field names, trace/span ids and the correlation id."""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import sys
from typing import Any

from opentelemetry import trace

correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "xcagw_correlation_id", default=""
)
partner_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("xcagw_partner_id", default="")

_PSEUDONYM_KEY_ENV = "XCAGW_LOG_PSEUDONYM_KEY"


def pseudonymise(identifier: str) -> str:
    """A stable, non-reversible token for a patient identifier, safe for logs.

    Keyed (HMAC) so that NHS numbers, a small keyspace, cannot be brute-forced from the logs.
    """
    key = os.environ.get(_PSEUDONYM_KEY_ENV, "xcagw-dev-pseudonym-key").encode()
    digest = hmac.new(key, identifier.strip().encode(), hashlib.sha256).hexdigest()
    return "pt_" + digest[:16]


class EcsJsonFormatter(logging.Formatter):
    """One JSON object per line using Elastic Common Schema names."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "service.name": self.service_name,
            "ecs.version": "8.11.0",
            "process.pid": record.process,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            doc["trace.id"] = format(span.trace_id, "032x")
            doc["span.id"] = format(span.span_id, "016x")
        if cid := correlation_id_var.get():
            doc["labels.correlation_id"] = cid
        if pid := partner_id_var.get():
            doc["labels.partner_id"] = pid
        extra = getattr(record, "ecs", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["error.type"] = record.exc_info[0].__name__ if record.exc_info[0] else "Exception"
            doc["error.message"] = str(record.exc_info[1])
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(service_name: str, level: str = "INFO") -> None:
    """Route every logger (ours, grpc, uvicorn) to stdout as ECS JSON."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(EcsJsonFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # httpx logs full request URLs at INFO, which would carry NHS numbers in PDS paths.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
