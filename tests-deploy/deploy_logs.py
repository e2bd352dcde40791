"""The log contract between the services (xcagw_common.logging) and deploy/elk.

`check_ecs_line(line)` is what an e2e run uses on captured service output: every line must be
one JSON object carrying the ECS fields the Logstash pipeline and the Kibana objects rely on.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Fields on every line (the pipeline tags a line that lacks one of the first three).
REQUIRED_FIELDS = ("@timestamp", "log.level", "service.name", "ecs.version", "message")
# Fields on every line written inside a span (all request handling is).
TRACE_FIELDS = ("trace.id", "span.id")
# Optional fields with a fixed shape when present.
OPTIONAL_FIELDS = ("labels.correlation_id", "labels.partner_id", "log.logger", "process.pid")
LEVELS = {"debug", "info", "warning", "error", "critical"}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
# An NHS number never reaches a log line (only the pseudonym `pt_<hex>`).
# A standalone 10-digit number (optionally 3-3-4 spaced). Digits inside a hex or UUID token
# (trace ids, request ids) are not standalone, so letters around them do not count as a match.
_NHS_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}(?![0-9A-Za-z])")


def check_ecs_line(line: str, *, in_span: bool = False) -> list[str]:
    """Problems with one log line ([] when it satisfies the ELK pipeline's contract)."""
    try:
        doc: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc.msg}"]
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    problems = [f"missing {name}" for name in REQUIRED_FIELDS if name not in doc]
    if doc.get("log.level") not in LEVELS:
        problems.append(f"log.level {doc.get('log.level')!r} not one of {sorted(LEVELS)}")
    if in_span:
        problems += [f"missing {name}" for name in TRACE_FIELDS if name not in doc]
    if "trace.id" in doc and not _HEX32.match(str(doc["trace.id"])):
        problems.append("trace.id is not 32 lowercase hex digits")
    if "span.id" in doc and not _HEX16.match(str(doc["span.id"])):
        problems.append("span.id is not 16 lowercase hex digits")
    for key, value in doc.items():
        exempt = ("@timestamp",)
        if isinstance(value, str) and _NHS_NUMBER.search(value) and key not in exempt:
            problems.append(f"{key} holds a 10-digit number (NHS number?)")
    return problems
