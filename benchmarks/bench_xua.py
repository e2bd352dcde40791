"""XUA (ITI-40) verification cost per request, in process: full verification vs cache hit.

    .venv/bin/python benchmarks/bench_xua.py [--n 300]

Builds the partner client's signed assertion (xcagw_devstack.partner, RSA-SHA256, exclusive
c14n) inside a SOAP envelope, parses the envelope as soap-edge does, and times
`XuaVerifier.verify` for: the development partner (attributes read, nothing verified), a
verified partner without the verified-assertion cache (every request verifies the signature),
and with it (same assertion, new envelope per request: a partner session). CPU time of this
thread, median of 5 rounds of --n calls. Writes benchmarks/results/xua.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, saml_issuer_keypair  # noqa: E402

from soap_edge.security.partners import PartnerRegistry  # noqa: E402
from soap_edge.security.xua import XuaPolicy, XuaVerifier  # noqa: E402
from xcagw_devstack.partner import (  # noqa: E402
    ACTIONS,
    NHS_NUMBER_OID,
    Requester,
    envelope,
    find_documents,
    sign_assertion,
    xua_assertion,
)

AUDIENCE = "urn:xcagw:bench:soap-edge"


def parsed_envelopes(assertion: etree._Element, n: int) -> list[etree._Element]:
    cx = f"9000000009^^^&{NHS_NUMBER_OID}&ISO"
    out = []
    for _ in range(n):
        raw, _ = envelope(
            ACTIONS["iti38"],
            find_documents(cx),
            to="http://gateway.example/iti38",
            assertion=etree.fromstring(etree.tostring(assertion)),
        )
        out.append(etree.fromstring(raw))
    return out


def cpu_us(verifier: XuaVerifier, envelopes: list[etree._Element], partner: Any) -> float:
    rounds = []
    for _ in range(5):
        start = time.thread_time()
        for env in envelopes:
            if verifier.verify(env, partner, endpoint_audiences=[AUDIENCE]) is None:
                raise SystemExit("no identity")
        rounds.append((time.thread_time() - start) / len(envelopes) * 1e6)
    return round(statistics.median(rounds), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "xua.json")
    args = parser.parse_args()
    key_pem, cert_pem = saml_issuer_keypair()
    registry = PartnerRegistry.from_mapping(
        {
            "partners": [
                {"id": "dev", "saml": {"required": False, "verify": False}},
                {
                    "id": "signed",
                    "saml": {
                        "issuer_certificates": [cert_pem.decode("ascii")],
                        "audiences": [AUDIENCE],
                    },
                },
            ]
        },
        base_dir=Path("."),
    )
    requester = Requester(audience=AUDIENCE, lifetime_seconds=3600)
    signed = sign_assertion(xua_assertion(requester), key_pem, cert_pem)
    envelopes = parsed_envelopes(signed, args.n)
    report: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv), "n": args.n}
    results = {
        "dev partner (unverified)": cpu_us(
            XuaVerifier(XuaPolicy()), envelopes, registry.get("dev")
        ),
        "signed, no cache (verify every request)": cpu_us(
            XuaVerifier(XuaPolicy()), envelopes, registry.get("signed")
        ),
        "signed, verified-assertion cache hit": cpu_us(
            XuaVerifier(XuaPolicy(cache_seconds=300.0)), envelopes, registry.get("signed")
        ),
    }
    report["cpu_us_per_verify"] = results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
