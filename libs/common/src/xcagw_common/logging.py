"""JSON logs on stdout with ECS field names, trace/span ids and the correlation id."""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
from typing import Any

from opentelemetry import trace

correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "xcagw_correlation_id", default=""
)
partner_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("xcagw_partner_id", default="")

_PSEUDONYM_KEY_ENV = "XCAGW_LOG_PSEUDONYM_KEY"

log = logging.getLogger(__name__)

# The HMAC key of `pseudonymise`, read from the environment once per process (setup_logging, or
# the first pseudonym if logging was never set up) rather than on every call.
_pseudonym_key: bytes | None = None
_pseudonym_key_lock = threading.Lock()


def _read_pseudonym_key() -> bytes:
    configured = os.environ.get(_PSEUDONYM_KEY_ENV, "")
    if configured.strip():
        return configured.encode()
    # No shared key: a public fallback would let anyone who reads the logs recover NHS numbers
    # by hashing all 10^9 of them, so this process gets a secret of its own instead.
    log.warning(
        "%s is not set: patient pseudonyms in this process's logs use a random key, so they "
        "cannot be compared with other processes' or across restarts",
        _PSEUDONYM_KEY_ENV,
    )
    return secrets.token_bytes(32)


def configure_pseudonym_key() -> None:
    """(Re)read XCAGW_LOG_PSEUDONYM_KEY; unset or blank means a random per-process key.

    setup_logging calls it, so each service reads the key once in main(). Deployments share one
    key (a Kubernetes Secret; dev.env in development) so one patient's pseudonym is the same in
    every service's logs.
    """
    global _pseudonym_key
    key = _read_pseudonym_key()
    with _pseudonym_key_lock:
        _pseudonym_key = key


def _current_pseudonym_key() -> bytes:
    global _pseudonym_key
    key = _pseudonym_key
    if key is None:
        with _pseudonym_key_lock:
            if _pseudonym_key is None:
                _pseudonym_key = _read_pseudonym_key()
            key = _pseudonym_key
    return key


def pseudonymise(identifier: str) -> str:
    """A stable, non-reversible token for a patient identifier, safe for logs: `pt_<16 hex>`.

    Keyed (HMAC-SHA256) with a secret key so that NHS numbers, a small keyspace, cannot be
    brute-forced from the logs; stable for as long as the key is (configure_pseudonym_key).
    """
    digest = hmac.new(_current_pseudonym_key(), identifier.strip().encode(), hashlib.sha256)
    return "pt_" + digest.hexdigest()[:16]


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
    """Route every logger (ours, grpc, uvicorn) to stdout as ECS JSON; read the pseudonym key."""
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
    # After the handler is in place, so a warning about a missing key is logged as JSON too.
    configure_pseudonym_key()
