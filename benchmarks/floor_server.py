"""The floor: the least work any cached ITI-38/39 answer needs, as its own server.

    .venv/bin/python benchmarks/floor_server.py --port P --payload-dir D --redis-url URL

Run by `bench_throughput.py` beside soap-edge and the bare FastAPI endpoint, under the same load
generator and the same server configuration (uvicorn, uvloop, httptools). It answers POST /iti38
and /iti39 with soap-edge's own captured answers, and per request does only the library calls
that a gateway cannot leave out and that soap-edge makes too, each in its cheapest form:

- one SERVER span, parent taken from `traceparent` (the issue asks for traced requests);
- the body read and parsed once by lxml, entities and network off (untrusted XML);
- one Redis round trip through soap-edge's own automatic pipeline (`AutoPipeline`): the
  patient's document pointer GET, the query->retrieve session SET, and an audit XADD, because
  an ATNA record must be in Redis before the answer is released (ihe-xca-rules §10);
- the answer envelope re-serialised by lxml with this request's MessageID in wsa:RelatesTo
  (the answer depends on the request, so it cannot be sent as stored bytes).

It leaves out everything else soap-edge does: the XUA assertion checks (88 us per cached
assertion alone, PROFILE.md section 7), WS-Addressing and mustUnderstand validation, the stored
query's parameter validation, the ebRIM/MTOM answer construction, the ATNA message itself,
rate limiting, metrics and logs. It is not a gateway: its CPU per request is a lower bound for
one, in this runtime, and so bounds the soap-edge/bare ratio any CPython worker can reach.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from lxml import etree

WSA = "http://www.w3.org/2005/08/addressing"
AUDIT = "xcagw:bench-floor:audit"
_ROOT_PART = re.compile(rb"\r\n\r\n(<\?xml.*?</(?:\w+:)?Envelope>)", re.S)


class Answer:
    """A captured answer: its XML envelope as a tree, and the MTOM bytes around it (ITI-39)."""

    def __init__(self, raw: bytes, content_type: str, parser: etree.XMLParser) -> None:
        self.content_type = content_type.encode("latin-1")
        match = _ROOT_PART.search(raw) if content_type.startswith("multipart/") else None
        if match:
            self.prefix, xml, self.suffix = (
                raw[: match.start(1)],
                match.group(1),
                raw[match.end(1) :],
            )
        else:
            self.prefix, xml, self.suffix = b"", raw, b""
        self.xml = xml
        self.tree = etree.fromstring(xml, parser)
        relates = self.tree.find(f".//{{{WSA}}}RelatesTo")
        if relates is None:
            raise SystemExit("captured answer has no wsa:RelatesTo")
        self.relates = relates


def serve(port: int, payload_dir: Path, redis_url: str, skip: frozenset[str] = frozenset()) -> None:
    from benchlib import serve_like_soap_edge
    from opentelemetry import propagate, trace

    from soap_edge.redisbatch import AutoPipeline
    from xcagw_common import telemetry
    from xcagw_common.redis import create_redis

    if "span" not in skip:
        telemetry.setup("bench-floor")
    tracer = trace.get_tracer("bench-floor")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    meta = json.loads((payload_dir / "meta.json").read_text())
    answers = {
        f"/{name}": Answer((payload_dir / f"{name}.bin").read_bytes(), ct, parser)
        for name, ct in meta.items()
    }
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["redis"] = create_redis(redis_url)
                    state["batch"] = AutoPipeline(state["redis"])
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["redis"].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        answer = answers[scope["path"]]
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with tracer.start_as_current_span(
            f"POST {scope['path']}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "POST", "url.path": scope["path"]},
        ) as span:
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            message_id = "urn:uuid:00000000-0000-0000-0000-000000000000"
            if "parse" not in skip:
                request = etree.fromstring(b"".join(chunks), parser)
                message_id = request.findtext(f".//{{{WSA}}}MessageID") or ""
            if "redis" not in skip:
                await state["batch"].execute_many(
                    [
                        ("GET", "xcagw:bench-floor:pointer"),
                        ("SET", f"xcagw:bench-floor:session:{message_id}", "1", "EX", 300),
                        (
                            "XADD",
                            "xcagw:bench-floor:audit",
                            "MAXLEN",
                            "~",
                            10000,
                            "*",
                            "m",
                            message_id,
                        ),
                    ]
                )
            answer.relates.text = message_id
            xml = (
                answer.xml
                if "serialise" in skip
                else etree.tostring(answer.tree, xml_declaration=True, encoding="UTF-8")
            )
            body = answer.prefix + xml + answer.suffix
            span.set_attribute("http.response.status_code", 200)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", answer.content_type),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

    serve_like_soap_edge(app, port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload-dir", type=Path, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument(
        "--skip",
        default="",
        help="ablation: comma-separated parts to leave out (span, parse, redis, serialise)",
    )
    args = parser.parse_args()
    skip = frozenset(part for part in args.skip.split(",") if part)
    serve(args.port, args.payload_dir, args.redis_url, skip)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
