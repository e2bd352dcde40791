"""ITI-38 Cross Gateway Query: stored queries, parameters, metadata, caching and errors."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest
from lxml import etree
from soap_edge_testkit import (
    APPROVED,
    CEID_OID,
    FIND_DOCUMENTS,
    GET_DOCUMENTS,
    HCID,
    HCID_OID,
    INVALID,
    JANE,
    NHS_OID,
    ON_DEMAND,
    REPO,
    RESTRICTED,
    STABLE,
    UNIQUE_ID,
    UNKNOWN,
    adhoc_body,
    cx,
    envelope,
    find_documents,
    pdq_body,
    post,
    retrieve_body,
)

from soap_edge.iti38 import STORED_QUERIES, parse_value

XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
DEFERRED = "urn:ihe:iti:2010:StatusType:DeferredCreation"
RIM_NS = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}
AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
OWN_UNIQUE_ID = (
    "string(rim:ExternalIdentifier"
    "[@identificationScheme='urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']/@value)"
)
PATIENT_ID = (
    "string(rim:ExternalIdentifier"
    "[@identificationScheme='urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427']/@value)"
)


async def query(client, check, body: str, path: str = "/iti38", action: str = XCQ):  # type: ignore[no-untyped-def]
    resp = await post(client, path, envelope(action, body, message_id="urn:uuid:q-1"))
    assert resp.status_code == 200, resp.text
    parsed = check(resp)
    assert parsed.header("RelatesTo") == "urn:uuid:q-1"
    return parsed


def status(parsed) -> str:  # type: ignore[no-untyped-def]
    return str(parsed.xpath("string(//query:AdhocQueryResponse/@status)"))


def error_codes(parsed) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(c) for c in parsed.xpath("//rs:RegistryError/@errorCode")]


def slot(eo, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        str(v)
        for v in eo.xpath(
            f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value/text()",
            namespaces={"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"},
        )
    ]


def test_slot_value_syntax() -> None:
    assert parse_value("('a','b')") == ["a", "b"]
    assert parse_value("('it''s', 'x^^y')") == ["it's", "x^^y"]
    assert parse_value("'9000000009^^^&2.16&ISO'") == ["9000000009^^^&2.16&ISO"]
    assert parse_value("20200101") == ["20200101"]
    assert len(STORED_QUERIES) == 14


async def test_find_documents_leafclass_full_metadata(client, check, fakes) -> None:
    parsed = await query(client, check, find_documents())
    assert parsed.header("Action") == "urn:ihe:iti:2007:CrossGatewayQueryResponse"
    assert status(parsed) == SUCCESS
    eos = parsed.xpath("//rim:ExtrinsicObject")
    assert len(eos) == 1
    eo = eos[0]
    assert (
        eo.get("objectType") == STABLE
        and eo.get("home") == HCID
        and eo.get("id").startswith("urn:uuid:")
    )
    assert eo.get("status") == APPROVED and eo.get("mimeType") == "text/xml"
    assert slot(eo, "repositoryUniqueId") == [REPO]
    assert slot(eo, "sourcePatientId") == [f"{JANE}^^^&{NHS_OID}&ISO"]
    assert slot(eo, "languageCode") == ["en-GB"]
    assert slot(eo, "serviceStartTime") == ["20100101"] and slot(eo, "serviceStopTime") == [
        "20250101110000"
    ]
    assert "PID-5|Smith^Jane^^^" in slot(eo, "sourcePatientInfo")
    fmt = eo.xpath(
        "rim:Classification[@classificationScheme='urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d']",
        namespaces={"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"},
    )[0]
    assert fmt.get("nodeRepresentation") == "urn:hl7-org:sdwg:ccda-structuredBody:2.1"
    assert slot(fmt, "codingScheme") == ["1.3.6.1.4.1.19376.1.2.3"]
    author = parsed.xpath(
        "string(//rim:Classification[@classificationScheme='urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d']/rim:Slot[@name='authorInstitution']//rim:Value)"
    )
    assert author == "Y12345^^^^^&2.16.840.1.113883.2.1.3.2.4.19.1&ISO^^^^Y12345"
    unique_id = parsed.xpath(UNIQUE_ID)
    # hash and size describe exactly the bytes ITI-39 returns.
    resp = await post(
        client,
        "/iti39",
        envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", retrieve_body((HCID, REPO, unique_id))),
    )
    doc = check(resp)
    data = next(iter(doc.attachments.values()))
    assert slot(eo, "hash") == [hashlib.sha1(data).hexdigest()]  # noqa: S324 - XDS mandates SHA-1
    assert slot(eo, "size") == [str(len(data))]


async def test_repeat_queries_are_stable_and_fetch_once(client, check, fakes) -> None:
    first = await query(client, check, find_documents())
    second = await query(client, check, find_documents())

    def ids(p):  # type: ignore[no-untyped-def]
        return (
            p.xpath("string(//rim:ExtrinsicObject/@id)"),
            p.xpath("string(//rim:Slot[@name='hash']//rim:Value)"),
        )

    assert ids(first) == ids(second)
    assert fakes.state.calls["GetStructuredRecord"] == 1 and fakes.state.calls["ConvertBundle"] == 1


async def test_concurrent_misses_generate_once(client, check, fakes) -> None:
    fakes.state.gpc_delay = 0.3
    bodies = [envelope(XCQ, find_documents()) for _ in range(4)]
    resps = await asyncio.gather(*(post(client, "/iti38", b) for b in bodies))
    entry_ids = {check(r).xpath("string(//rim:ExtrinsicObject/@id)") for r in resps}
    assert len(entry_ids) == 1
    assert fakes.state.calls["GetStructuredRecord"] == 1


async def test_object_ref(client, check) -> None:
    parsed = await query(client, check, find_documents(return_type="ObjectRef"))
    refs = parsed.xpath("//rim:ObjectRef")
    assert (
        len(refs) == 1 and refs[0].get("home") == HCID and refs[0].get("id").startswith("urn:uuid:")
    )
    assert not parsed.xpath("//rim:ExtrinsicObject")


async def test_on_demand_only_when_asked(client, check, fakes) -> None:
    parsed = await query(
        client, check, find_documents(extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]})
    )
    eos = parsed.xpath("//rim:ExtrinsicObject")
    assert [e.get("objectType") for e in eos] == [ON_DEMAND]
    assert (
        not slot(eos[0], "hash") and not slot(eos[0], "size") and not slot(eos[0], "creationTime")
    )
    assert fakes.state.calls["GetStructuredRecord"] == 0  # nothing generated for an on-demand entry
    both = await query(
        client,
        check,
        find_documents(extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}','{STABLE}')"]}),
    )
    assert sorted(e.get("objectType") for e in both.xpath("//rim:ExtrinsicObject")) == sorted(
        [ON_DEMAND, STABLE]
    )
    again = await query(
        client, check, find_documents(extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]})
    )
    assert again.xpath("string(//rim:ExtrinsicObject/@id)") == eos[0].get("id")


async def test_too_many_leaf_class_results_ask_for_object_ref(client, check) -> None:
    client.app.state.settings.max_leaf_class_results = 1
    both = {"$XDSDocumentEntryType": [f"('{ON_DEMAND}','{STABLE}')"]}
    leaf = await query(client, check, find_documents(extra=both))
    assert status(leaf) == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
    assert error_codes(leaf) == ["XDSTooManyResults"]
    assert "ObjectRef" in leaf.xpath("string(//rs:RegistryError/@codeContext)")
    assert not leaf.xpath("//rim:ExtrinsicObject")
    # ITI TF-2a 3.18.4.1.3: the initiator then asks for references, which are never too many.
    refs = await query(client, check, find_documents(extra=both, return_type="ObjectRef"))
    assert status(refs) == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
    assert len(refs.xpath("//rim:ObjectRef")) == 2


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ({"$XDSDocumentEntryStatus": [f"('{DEFERRED}')"]}, 0),
        (
            {
                "$XDSDocumentEntryStatus": [f"('{DEFERRED}','{APPROVED}')"],
                "$XDSDocumentEntryClassCode": ["('34133-9^^2.16.840.1.113883.6.1')"],
            },
            1,
        ),
        ({"$XDSDocumentEntryClassCode": ["('11488-4^^2.16.840.1.113883.6.1')"]}, 0),
        ({"$XDSDocumentEntryTypeCode": ["('34133-9')"]}, 1),
        (
            {
                "$XDSDocumentEntryFormatCode": [
                    "('urn:hl7-org:sdwg:ccda-structuredBody:2.1^^1.3.6.1.4.1.19376.1.2.3')"
                ]
            },
            1,
        ),
        (
            {"$XDSDocumentEntryFormatCode": ["('urn:ihe:pcc:xphr:2007^^1.3.6.1.4.1.19376.1.2.3')"]},
            0,
        ),
        ({"$XDSDocumentEntryPracticeSettingCode": ["('394814009^^2.16.840.1.113883.6.96')"]}, 1),
        ({"$XDSDocumentEntryHealthcareFacilityTypeCode": ["('999^^2.16.840.1.113883.6.96')"]}, 0),
        ({"$XDSDocumentEntryConfidentialityCode": ["('R')", "('N')"]}, 1),
        (
            [
                ("$XDSDocumentEntryConfidentialityCode", ["('N^^2.16.840.1.113883.5.25')"]),
                ("$XDSDocumentEntryConfidentialityCode", ["('N','R')"]),
            ],
            1,
        ),
        (
            [
                ("$XDSDocumentEntryConfidentialityCode", ["('N')"]),
                ("$XDSDocumentEntryConfidentialityCode", ["('R')"]),
            ],
            0,
        ),
        ({"$XDSDocumentEntryEventCodeList": ["('x^^y')"]}, 0),
        ({"$XDSDocumentEntryCreationTimeFrom": ["20000101"]}, 1),
        ({"$XDSDocumentEntryCreationTimeTo": ["20000101"]}, 0),
        (
            {
                "$XDSDocumentEntryServiceStartTimeFrom": ["2010"],
                "$XDSDocumentEntryServiceStartTimeTo": ["2011"],
            },
            1,
        ),
        ({"$XDSDocumentEntryServiceStopTimeTo": ["2020"]}, 0),
    ],
)
async def test_find_documents_filters(client, check, fakes, extra, found) -> None:
    parsed = await query(client, check, find_documents(extra=extra))
    assert status(parsed) == SUCCESS
    assert len(parsed.xpath("//rim:ExtrinsicObject")) == found


async def test_code_filter_mismatch_calls_no_backend(client, check, fakes) -> None:
    await query(
        client, check, find_documents(extra={"$XDSDocumentEntryClassCode": ["('11488-4')"]})
    )
    assert sum(fakes.state.calls.values()) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (adhoc_body("urn:uuid:00000000-0000-0000-0000-000000000000", {}), "XDSUnknownStoredQuery"),
        (
            adhoc_body(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": [f"'{cx(JANE)}'"]}),
            "XDSStoredQueryMissingParam",
        ),
        (
            adhoc_body(FIND_DOCUMENTS, {"$XDSDocumentEntryStatus": [f"('{APPROVED}')"]}),
            "XDSStoredQueryMissingParam",
        ),
        (
            find_documents(
                extra={"$XDSDocumentEntryPatientId": [f"('{cx(JANE)}','{cx(UNKNOWN)}')"]}
            ),
            "XDSStoredQueryParamNumber",
        ),
        (
            find_documents(extra={"$XDSDocumentEntryCreationTimeFrom": ["2020", "2021"]}),
            "XDSStoredQueryParamNumber",
        ),
        (
            find_documents(extra=[("$XDSDocumentEntryPatientId", [f"'{cx(JANE)}'"])]),
            "XDSStoredQueryParamNumber",
        ),
        (
            find_documents(extra={"$XDSDocumentEntryCreationTimeFrom": ["yesterday"]}),
            "XDSRegistryError",
        ),
        (adhoc_body(GET_DOCUMENTS, {}, home=HCID), "XDSStoredQueryMissingParam"),
        (
            adhoc_body(
                GET_DOCUMENTS,
                {
                    "$XDSDocumentEntryEntryUUID": ["('urn:uuid:a')"],
                    "$XDSDocumentEntryUniqueId": ["('1.2')"],
                },
                home=HCID,
            ),
            "XDSStoredQueryParamNumber",
        ),
        (
            adhoc_body(GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": ["('1.2')"]}),
            "XDSMissingHomeCommunityId",
        ),
        (
            adhoc_body(
                GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": ["('1.2')"]}, home="urn:oid:1.2.3.4"
            ),
            "XDSUnknownCommunity",
        ),
        (find_documents(UNKNOWN), "XDSUnknownPatientId"),
        (find_documents(RESTRICTED), "XDSUnknownPatientId"),
        (find_documents(INVALID), "XDSUnknownPatientId"),
        (find_documents(JANE, oid="2.16.578.1.12.4.1.4.1"), "XDSUnknownPatientId"),
        (find_documents("EPIC-NO-MAPPING", oid=CEID_OID), "XDSUnknownPatientId"),
    ],
)
async def test_errors_are_registry_errors_with_our_location(client, check, body, code) -> None:
    parsed = await query(client, check, body)
    assert status(parsed) == FAILURE
    assert error_codes(parsed) == [code]
    assert parsed.xpath("string(//rs:RegistryError/@location)") == HCID
    # query.xsd order: the error list comes before the (empty, required) object list.
    resp = parsed.xpath("//query:AdhocQueryResponse")[0]
    assert [c.tag.split("}")[1] for c in resp] == ["RegistryErrorList", "RegistryObjectList"]


async def test_restricted_patient_never_reaches_gp_connect(client, check, fakes) -> None:
    await query(client, check, find_documents(RESTRICTED))
    assert fakes.state.calls["GetStructuredRecord"] == 0


@pytest.mark.parametrize(
    ("service", "failure", "code"),
    [
        ("gpc", (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"), "XDSUnavailableCommunity"),
        ("gpc", (grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT"), "XDSUnavailableCommunity"),
        (
            "gpc",
            (grpc.StatusCode.PERMISSION_DENIED, "NO_PATIENT_CONSENT"),
            "LocalPolicyRestrictionError",
        ),
        ("gpc", (grpc.StatusCode.NOT_FOUND, "PATIENT_NOT_FOUND"), "XDSUnknownPatientId"),
        ("ccda", (grpc.StatusCode.INTERNAL, "CONVERSION_FAILED"), "XDSRegistryError"),
        ("pds", (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"), "XDSRegistryNotAvailable"),
    ],
)
async def test_backend_failures_are_failure_responses(
    client, check, fakes, service, failure, code
) -> None:
    setattr(fakes.state, f"{service}_failure", failure)
    parsed = await query(client, check, find_documents())
    assert status(parsed) == FAILURE and error_codes(parsed) == [code]
    # Nothing half-made was stored: the next query tries again.
    setattr(fakes.state, f"{service}_failure", None)
    assert status(await query(client, check, find_documents())) == SUCCESS


async def test_ceid_patient_id_after_iti47_mapping(client, check) -> None:
    pdq = envelope(
        "urn:hl7-org:v3:PRPA_IN201305UV02", pdq_body(ids=[(NHS_OID, JANE), (CEID_OID, "EPIC42")])
    )
    assert (await post(client, "/iti47", pdq)).status_code == 200
    both = {"$XDSDocumentEntryType": [f"('{STABLE}','{ON_DEMAND}')"]}
    parsed = await query(client, check, find_documents("EPIC42", oid=CEID_OID, extra=both))
    assert status(parsed) == SUCCESS
    eos = parsed.xpath("//rim:ExtrinsicObject")
    assert sorted(eo.get("objectType") for eo in eos) == sorted([STABLE, ON_DEMAND])
    for eo in eos:
        # patientId stays the id the initiator queried with (its CEID) ...
        assert eo.xpath(PATIENT_ID, namespaces=RIM_NS) == f"EPIC42^^^&{CEID_OID}&ISO"
        # ... while sourcePatientId is the patient in the GP record's own domain (ITI TF-3
        # 4.2.3.2), the NHS number, as sourcePatientInfo PID-3 says.
        assert slot(eo, "sourcePatientId") == [f"{JANE}^^^&{NHS_OID}&ISO"]
        assert f"PID-3|{JANE}^^^&{NHS_OID}&ISO" in slot(eo, "sourcePatientInfo")


async def test_get_documents_by_uuid_and_unique_id(client, check) -> None:
    found = await query(client, check, find_documents())
    entry = found.xpath("string(//rim:ExtrinsicObject/@id)")
    uid = found.xpath(UNIQUE_ID)
    by_uuid = await query(
        client,
        check,
        adhoc_body(
            GET_DOCUMENTS,
            {"$XDSDocumentEntryEntryUUID": [f"('{entry}', 'urn:uuid:0000')"]},
            home=HCID,
        ),
    )
    assert (
        status(by_uuid) == SUCCESS and by_uuid.xpath("string(//rim:ExtrinsicObject/@id)") == entry
    )
    by_uid = await query(
        client,
        check,
        adhoc_body(
            GET_DOCUMENTS,
            {"$XDSDocumentEntryUniqueId": [f"('{uid}')"]},
            home=HCID,
            return_type="ObjectRef",
        ),
    )
    assert by_uid.xpath("string(//rim:ObjectRef/@id)") == entry
    od = await query(
        client, check, find_documents(extra={"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]})
    )
    od_entry = od.xpath("string(//rim:ExtrinsicObject/@id)")
    got = await query(
        client,
        check,
        adhoc_body(GET_DOCUMENTS, {"$XDSDocumentEntryEntryUUID": [f"('{od_entry}')"]}, home=HCID),
    )
    assert got.xpath("string(//rim:ExtrinsicObject/@objectType)") == ON_DEMAND


def c14n(eo) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(etree.tostring(eo, method="c14n", exclusive=True))


async def test_on_demand_entry_is_the_same_in_every_query(client, check, fakes) -> None:
    both = {"$XDSDocumentEntryType": [f"('{STABLE}','{ON_DEMAND}')"]}
    only = {"$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]}
    with_stable = await query(client, check, find_documents(extra=both))
    stable = with_stable.xpath(f"//rim:ExtrinsicObject[@objectType='{STABLE}']")[0]
    assert slot(stable, "serviceStartTime") == ["20100101"]  # the snapshot has service times
    on_demand = with_stable.xpath(f"//rim:ExtrinsicObject[@objectType='{ON_DEMAND}']")[0]
    entry, uid = on_demand.get("id"), on_demand.xpath(OWN_UNIQUE_ID, namespaces=RIM_NS)
    alone = (await query(client, check, find_documents(extra=only))).xpath("//rim:ExtrinsicObject")
    by_uuid = (
        await query(
            client,
            check,
            adhoc_body(GET_DOCUMENTS, {"$XDSDocumentEntryEntryUUID": [f"('{entry}')"]}, home=HCID),
        )
    ).xpath("//rim:ExtrinsicObject")
    by_uid = (
        await query(
            client,
            check,
            adhoc_body(GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": [f"('{uid}')"]}, home=HCID),
        )
    ).xpath("//rim:ExtrinsicObject")
    assert len(alone) == len(by_uuid) == len(by_uid) == 1
    assert c14n(on_demand) == c14n(alone[0]) == c14n(by_uuid[0]) == c14n(by_uid[0])
    # Nothing of the stored snapshot: the on-demand document is generated at retrieve time.
    for name in ("serviceStartTime", "serviceStopTime", "creationTime", "hash", "size"):
        assert not slot(on_demand, name), name
    assert not on_demand.xpath(
        f"rim:Classification[@classificationScheme='{AUTHOR}']", namespaces=RIM_NS
    )
    assert slot(on_demand, "sourcePatientInfo") == [f"PID-3|{JANE}^^^&{NHS_OID}&ISO"]
    assert slot(on_demand, "sourcePatientId") == [f"{JANE}^^^&{NHS_OID}&ISO"]


async def test_service_time_filters_treat_the_on_demand_entry_alike(client, check) -> None:
    # The on-demand entry has no service times, so a service-time filter never finds it, whether
    # or not the stable entry (which has them) was asked for too.
    window = {
        "$XDSDocumentEntryServiceStartTimeFrom": ["2010"],
        "$XDSDocumentEntryServiceStartTimeTo": ["2011"],
    }
    both = await query(
        client,
        check,
        find_documents(extra={**window, "$XDSDocumentEntryType": [f"('{STABLE}','{ON_DEMAND}')"]}),
    )
    assert [e.get("objectType") for e in both.xpath("//rim:ExtrinsicObject")] == [STABLE]
    only = await query(
        client,
        check,
        find_documents(extra={**window, "$XDSDocumentEntryType": [f"('{ON_DEMAND}')"]}),
    )
    assert not only.xpath("//rim:ExtrinsicObject")


MINIMAL_PARAMS = {
    "FindDocuments": {
        "$XDSDocumentEntryPatientId": [f"'{cx(JANE)}'"],
        "$XDSDocumentEntryStatus": [f"('{APPROVED}')"],
    },
    "FindDocumentsByReferenceId": {
        "$XDSDocumentEntryPatientId": [f"'{cx(JANE)}'"],
        "$XDSDocumentEntryStatus": [f"('{APPROVED}')"],
        "$XDSDocumentEntryReferenceIdList": ["('ref^^^&amp;1.2&amp;ISO')"],
    },
    "FindSubmissionSets": {
        "$XDSSubmissionSetPatientId": [f"'{cx(JANE)}'"],
        "$XDSSubmissionSetStatus": [f"('{APPROVED}')"],
    },
    "FindFolders": {
        "$XDSFolderPatientId": [f"'{cx(JANE)}'"],
        "$XDSFolderStatus": [f"('{APPROVED}')"],
    },
    "GetAll": {
        "$patientId": [f"'{cx(JANE)}'"],
        "$XDSDocumentEntryStatus": [f"('{APPROVED}')"],
        "$XDSSubmissionSetStatus": [f"('{APPROVED}')"],
        "$XDSFolderStatus": [f"('{APPROVED}')"],
    },
    "GetDocuments": {"$XDSDocumentEntryUniqueId": ["('1.2.3')"]},
    "GetFolders": {"$XDSFolderEntryUUID": ["('urn:uuid:f')"]},
    "GetAssociations": {"$uuid": ["('urn:uuid:a')"]},
    "GetDocumentsAndAssociations": {"$XDSDocumentEntryEntryUUID": ["('urn:uuid:d')"]},
    "GetSubmissionSets": {"$uuid": ["('urn:uuid:d')"]},
    "GetSubmissionSetAndContents": {"$XDSSubmissionSetUniqueId": ["'1.2.3'"]},
    "GetFolderAndContents": {"$XDSFolderEntryUUID": ["'urn:uuid:f'"]},
    "GetFoldersForDocument": {"$XDSDocumentEntryUniqueId": ["'1.2.3'"]},
    "GetRelatedDocuments": {
        "$XDSDocumentEntryUniqueId": ["'1.2.3'"],
        "$AssociationTypes": ["('urn:ihe:iti:2007:AssociationType:RPLC')"],
    },
}


@pytest.mark.parametrize(("query_id", "name"), [(k, v.name) for k, v in STORED_QUERIES.items()])
async def test_all_stored_queries_parse_and_answer(client, check, query_id, name) -> None:
    definition = STORED_QUERIES[query_id]
    home = None if definition.patient_param else HCID
    parsed = await query(client, check, adhoc_body(query_id, MINIMAL_PARAMS[name], home=home))
    assert status(parsed) == SUCCESS, name
    expected = 1 if name in ("FindDocuments", "GetAll") else 0
    assert len(parsed.xpath("//rim:ExtrinsicObject")) == expected, name
    # Dropping a required parameter is refused with XDSStoredQueryMissingParam.
    required = [p for p, spec in definition.params.items() if spec.required] or [
        definition.one_of[0][0]
    ]
    without = {k: v for k, v in MINIMAL_PARAMS[name].items() if k not in required}
    if without != MINIMAL_PARAMS[name]:
        missing = await query(client, check, adhoc_body(query_id, without, home=home))
        assert error_codes(missing) == ["XDSStoredQueryMissingParam"], name


async def test_iti18_action_on_the_same_body(client, check) -> None:
    body = adhoc_body(
        "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155",
        {"$uuid": ["'0145ca61-6ea3-44d4-95bb-3506d6c14e4f'"]},
    )
    parsed = await query(client, check, body, action="urn:ihe:iti:2007:RegistryStoredQuery")
    assert parsed.header("Action") == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    assert status(parsed) == SUCCESS


async def test_redis_outage_is_registry_error_not_500(client, check, redis_server) -> None:
    redis_server.kill()
    try:
        parsed = await query(client, check, find_documents())
        assert status(parsed) == FAILURE and error_codes(parsed) == ["XDSRegistryError"]
        assert parsed.xpath("string(//rs:RegistryError/@location)") == HCID
    finally:
        redis_server.start()


async def test_second_hcid_is_accepted(client, check) -> None:
    client.app.state.settings.additional_home_community_ids = ["1.2.3.4.5.6"]
    parsed = await query(
        client,
        check,
        adhoc_body(
            GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": ["('1.2')"]}, home="urn:oid:1.2.3.4.5.6"
        ),
    )
    assert status(parsed) == SUCCESS
    assert HCID_OID
