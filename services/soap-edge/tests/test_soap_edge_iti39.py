"""ITI-39 Cross Gateway Retrieve: MTOM responses, statuses, errors and on-demand regeneration."""

from __future__ import annotations

import hashlib

import redis
from soap_edge_testkit import (
    HCID,
    HCID_OID,
    JANE,
    JAYNE,
    ON_DEMAND,
    REPO,
    UNIQUE_ID,
    envelope,
    find_documents,
    mtom_wrap,
    post,
    retrieve_body,
)

from soap_edge.store import key

XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"


async def unique_id_for(client, check, nhs: str = JANE, extra=None) -> str:  # type: ignore[no-untyped-def]
    resp = await post(client, "/iti38", envelope(XCQ, find_documents(nhs, extra=extra)))
    return str(check(resp).xpath(UNIQUE_ID))


async def retrieve(client, check, *docs, mtom_request: bool = False):  # type: ignore[no-untyped-def]
    env = envelope(XCR, retrieve_body(*docs), message_id="urn:uuid:r-1")
    if mtom_request:
        data, ct = mtom_wrap(env)
        resp = await post(client, "/iti39", data, ct)
    else:
        resp = await post(client, "/iti39", env)
    assert resp.status_code == 200, resp.text
    # IHE ITI TF-2x V.3.6: the retrieve response is MTOM.
    assert resp.headers["content-type"].startswith("multipart/related")
    assert 'type="application/xop+xml"' in resp.headers["content-type"]
    parsed = check(resp)
    assert parsed.header("RelatesTo") == "urn:uuid:r-1"
    assert parsed.header("Action") == "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"
    return parsed


def status(parsed) -> str:  # type: ignore[no-untyped-def]
    return str(parsed.xpath("string(//rs:RegistryResponse/@status)"))


def errors(parsed) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(c) for c in parsed.xpath("//rs:RegistryError/@errorCode")]


async def test_retrieve_is_mtom_with_the_stored_bytes(client, check) -> None:
    uid = await unique_id_for(client, check)
    for mtom_request in (False, True):
        parsed = await retrieve(client, check, (HCID, REPO, uid), mtom_request=mtom_request)
        assert status(parsed) == SUCCESS
        dr = parsed.xpath("//xdsb:DocumentResponse")[0]
        assert [c.tag.split("}")[1] for c in dr] == [
            "HomeCommunityId",
            "RepositoryUniqueId",
            "DocumentUniqueId",
            "mimeType",
            "Document",
        ]
        href = parsed.xpath("string(//xdsb:Document/*[local-name()='Include']/@href)")
        assert href.startswith("cid:") and "%40" in href  # percent-encoded cid
        data = parsed.attachments[href[4:].replace("%40", "@")]
        assert data.startswith(b"<?xml") and b"ClinicalDocument" in data


async def test_several_documents_and_partial_success(client, check) -> None:
    jane, jayne = (
        await unique_id_for(client, check, JANE),
        await unique_id_for(client, check, JAYNE),
    )
    both = await retrieve(client, check, (HCID, REPO, jane), (HCID, REPO, jayne))
    assert status(both) == SUCCESS and len(both.attachments) == 2
    partial = await retrieve(
        client, check, (HCID, REPO, jane), (HCID, REPO, "1.2.3.404"), (HCID, "9.9.9", jayne)
    )
    assert status(partial) == PARTIAL
    assert errors(partial) == ["XDSDocumentUniqueIdError", "XDSUnknownRepositoryId"]
    assert set(partial.xpath("//rs:RegistryError/@location")) == {HCID}
    assert len(partial.xpath("//xdsb:DocumentResponse")) == 1 and len(partial.attachments) == 1


async def test_failure_codes(client, check) -> None:
    uid = await unique_id_for(client, check)
    parsed = await retrieve(
        client,
        check,
        (None, REPO, uid),
        ("urn:oid:1.2.3.4", REPO, uid),
        (HCID, "1.2.3", uid),
        (HCID, REPO, "1.2.3.4.5.6.404"),
    )
    assert status(parsed) == FAILURE and not parsed.attachments
    assert errors(parsed) == [
        "XDSMissingHomeCommunityId",
        "XDSUnknownCommunity",
        "XDSUnknownRepositoryId",
        "XDSDocumentUniqueIdError",
    ]


async def test_bare_oid_home_community_is_accepted(client, check) -> None:
    # Seen in real NHN captures: HomeCommunityId without the urn:oid: prefix.
    uid = await unique_id_for(client, check)
    parsed = await retrieve(client, check, (HCID_OID, REPO, uid))
    assert status(parsed) == SUCCESS
    assert parsed.xpath("string(//xdsb:HomeCommunityId)") == HCID


async def test_expired_stable_document_is_unknown(client, check, redis_server) -> None:
    uid = await unique_id_for(client, check)
    redis.Redis(port=redis_server.port).delete(key("doc", uid))
    parsed = await retrieve(client, check, (HCID, REPO, uid))
    assert errors(parsed) == ["XDSDocumentUniqueIdError"]


async def test_on_demand_retrieve_and_regeneration(client, check, fakes, redis_server) -> None:
    uid = await unique_id_for(client, check, extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]})
    first = await retrieve(client, check, (HCID, REPO, uid))
    assert status(first) == SUCCESS
    new_uid = first.xpath("string(//xdsb:NewDocumentUniqueId)")
    assert (
        new_uid and new_uid != uid and first.xpath("string(//xdsb:NewRepositoryUniqueId)") == REPO
    )
    assert fakes.state.calls["GetStructuredRecord"] == 1
    # Same snapshot while it is kept ...
    again = await retrieve(client, check, (HCID, REPO, uid))
    assert again.xpath("string(//xdsb:NewDocumentUniqueId)") == new_uid
    # ... and the persisted snapshot is retrievable by its own id, with the advertised hash.
    snap = await retrieve(client, check, (HCID, REPO, new_uid))
    data = next(iter(snap.attachments.values()))
    stored = redis.Redis(port=redis_server.port).hget(key("doc", new_uid), "hash")
    assert stored.decode() == hashlib.sha1(data).hexdigest()  # noqa: S324 - XDS mandates SHA-1
    # The snapshot expires: the on-demand entry is regenerated, not refused.
    r = redis.Redis(port=redis_server.port)
    r.delete(key("doc", new_uid), key("patient-doc", JANE))
    regenerated = await retrieve(client, check, (HCID, REPO, uid))
    assert status(regenerated) == SUCCESS
    assert regenerated.xpath("string(//xdsb:NewDocumentUniqueId)") not in ("", new_uid)
    assert fakes.state.calls["GetStructuredRecord"] == 2


async def test_backend_failure_during_regeneration(client, check, fakes) -> None:
    import grpc

    uid = await unique_id_for(client, check, extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]})
    fakes.state.gpc_failure = (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    parsed = await retrieve(client, check, (HCID, REPO, uid))
    assert status(parsed) == FAILURE and errors(parsed) == ["XDSUnavailableCommunity"]


async def test_retrieve_requires_prior_query_when_configured(client, check) -> None:
    uid = await unique_id_for(client, check)
    client.app.state.settings.require_query_before_retrieve = True
    ok = await retrieve(client, check, (HCID, REPO, uid))
    assert status(ok) == SUCCESS  # the same (anonymous) partner queried it
    await client.app.state.gateway.store.redis.delete(key("session", "anonymous", uid))
    refused = await retrieve(client, check, (HCID, REPO, uid))
    assert errors(refused) == ["LocalPolicyRestrictionError"]


async def test_redis_outage_is_repository_error(client, check, redis_server) -> None:
    redis_server.kill()
    try:
        parsed = await retrieve(client, check, (HCID, REPO, "1.2.3"))
        assert status(parsed) == FAILURE and errors(parsed) == ["XDSRepositoryError"]
    finally:
        redis_server.start()


async def test_iti43_action(client, check) -> None:
    uid = await unique_id_for(client, check)
    env = envelope("urn:ihe:iti:2007:RetrieveDocumentSet", retrieve_body((None, REPO, uid)))
    resp = await post(client, "/iti39", env)
    parsed = check(resp)
    assert parsed.header("Action") == "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    assert status(parsed) == SUCCESS
