"""soap-edge publishes an accurate OpenAPI document of its own HTTP surface."""

from __future__ import annotations

import httpx

from xcagw_devstack.launcher import Stack

ENDPOINTS = ("/iti47", "/iti55", "/iti38", "/iti39", "/xca")


def test_openapi_document_describes_every_route_and_its_real_answers(stack: Stack) -> None:
    doc = httpx.get(f"{stack.management_url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert set(paths) == {"/health/live", "/health/ready", "/metrics", *ENDPOINTS}
    for endpoint in ENDPOINTS:
        assert set(paths[endpoint]) == {"get", "post"}
        post = paths[endpoint]["post"]
        assert "application/soap+xml" in post["requestBody"]["content"]
        assert {"200", "400", "500"} <= set(post["responses"])
        # What the document promises is what the endpoint does.
        wsdl = httpx.get(f"{stack.soap_edge_url}{endpoint}?wsdl", timeout=10)
        assert str(wsdl.status_code) in paths[endpoint]["get"]["responses"]
        assert wsdl.headers["content-type"].startswith("text/xml")
        bare = httpx.get(f"{stack.soap_edge_url}{endpoint}", timeout=10)
        assert bare.status_code == 405
        assert "405" in paths[endpoint]["get"]["responses"]
        bad = httpx.post(
            f"{stack.soap_edge_url}{endpoint}",
            content=b"<not-soap/>",
            headers={"content-type": "application/soap+xml"},
            timeout=10,
        )
        assert str(bad.status_code) in post["responses"], bad.status_code
        assert bad.headers["content-type"].startswith("application/soap+xml")
    for path in ("/health/live", "/health/ready", "/metrics"):
        got = httpx.get(f"{stack.management_url}{path}", timeout=10)
        assert str(got.status_code) in paths[path]["get"]["responses"], path
