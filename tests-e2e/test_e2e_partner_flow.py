"""ITI-47 -> ITI-38 -> ITI-39 for a sandbox patient through the launcher's stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xcagw_common.testing import shared_dir
from xcagw_devstack.partner import PartnerClient, documents_in, retrieved_documents

PATIENT = "9000000009"


def _validate_ccda(path: Path) -> dict[str, object]:
    validator = shared_dir() / "ccda" / "validate_ccda.py"
    if not validator.exists():
        pytest.skip(f"C-CDA validator not found at {validator} (../shared absent)")
    run = subprocess.run(
        [sys.executable, str(validator), str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(run.stdout)
    return result


async def test_partner_flow_pdq_query_retrieve_gives_a_valid_ccd(
    soap_edge_url: str, tmp_path: Path
) -> None:
    client = PartnerClient(soap_edge_url)
    try:
        pdq = await client.pdq(nhs_number=PATIENT)
        assert pdq.status_code == 200
        assert pdq.xpath("//hl7:acknowledgement/hl7:typeCode/@code") == ["AA"]
        assert pdq.xpath("//hl7:queryAck/hl7:queryResponseCode/@code") == ["OK"]
        ids = pdq.xpath("//hl7:subject1/hl7:patient/hl7:id/@extension")
        assert PATIENT in ids

        query = await client.find_documents(PATIENT)
        assert query.status_code == 200
        assert query.xpath("//query:AdhocQueryResponse/@status") == [
            "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
        ]
        docs = [d for d in documents_in(query) if d.unique_id]
        assert docs, "no stable DocumentEntry returned"

        again = await client.find_documents(PATIENT)
        assert {d.entry_uuid for d in documents_in(again)} >= {d.entry_uuid for d in docs}

        retrieved = await client.retrieve(docs[:1])
        assert retrieved.status_code == 200
        assert retrieved.content_type.startswith("multipart/related")
        assert retrieved.xpath("//rs:RegistryResponse/@status") == [
            "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
        ]
        documents = retrieved_documents(retrieved)
        assert [uid for uid, _ in documents] == [docs[0].unique_id]
        ccd = documents[0][1]
        assert b"ClinicalDocument" in ccd
    finally:
        await client.aclose()

    out = tmp_path / "ccd.xml"
    out.write_bytes(ccd)
    report = _validate_ccda(out)
    (result,) = report["results"]  # type: ignore[misc]
    assert result["xsd_errors"] == 0, result["messages"]
    assert result["schematron_errors"] == 0, result["messages"]
