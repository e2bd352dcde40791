"""MintGpConnectJwt: the unsigned GP Connect consumer JWT (audit and provenance, spec 1.6)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from token_service.config import Settings
from token_service.gpconnect import GpConnectJwtError, build_claims, parse_person_name
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_reason

AUDIENCE = "https://orange.testlab.nhs.uk/B82617/STU3/1/gpconnect/structured/fhir"


def decode(part: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def context(**fields: str) -> common_pb2.RequestContext:
    values = {
        "correlation_id": "urn:uuid:7d2b",
        "user_id": "jdoe01",
        "user_name": "Doe, Jane",
        "user_role": "158965000",
        "organization_name": "St Elsewhere Hospital",
        "organization_id": "urn:oid:1.2.826.0.1.1",
    }
    values.update(fields)
    return common_pb2.RequestContext(**values)


async def test_jwt_is_unsigned_and_carries_exactly_the_gp_connect_claims(
    settings_for: Any, service_factory: Any
) -> None:
    settings = settings_for(
        gpc_organisation_ods_map={"urn:oid:1.2.826.0.1.1": "RXX01"},
        gpc_local_user_id_system="https://xcagw.test.example/Id/xua-subject-id",
    )
    async with service_factory(settings) as svc:
        answer = await svc.stub.MintGpConnectJwt(
            token_service_pb2.MintGpConnectJwtRequest(
                context=context(), audience=AUDIENCE, nhs_number="9690937286"
            )
        )
    header, payload, signature = answer.jwt.split(".")
    assert answer.jwt.endswith(".") and signature == ""
    assert decode(header) == {"alg": "none", "typ": "JWT"}
    claims = decode(payload)
    iat = claims["iat"]
    assert answer.expires_at == claims["exp"] == iat + 300
    assert claims == {
        "iss": "https://xcagw.test.example/",
        "sub": "jdoe01",
        "aud": AUDIENCE,
        "exp": iat + 300,
        "iat": iat,
        "reason_for_request": "directcare",
        "requested_scope": "patient/*.read",
        "requesting_device": {
            "resourceType": "Device",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/nhsSpineASID", "value": "200000000359"}
            ],
            "model": "xcagw",
            "version": "0.1.0",
        },
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RXX01"}
            ],
            "name": "St Elsewhere Hospital",
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": "jdoe01",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "UNK"},
                {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "UNK"},
                {
                    "system": "https://xcagw.test.example/Id/xua-subject-id",
                    "value": "jdoe01",
                },
                {"system": "https://xcagw.test.example/Id/user-role", "value": "158965000"},
            ],
            "name": [{"family": "Doe", "given": ["Jane"]}],
        },
    }
    # GP Connect 1.x has no requested_record claim: the NHS number stays out of the token.
    assert "9690937286" not in answer.jwt and "9690937286" not in json.dumps(claims)


BAD_REQUESTS = [
    (None, AUDIENCE, "", "MISSING_REQUESTING_USER"),
    (context(user_id="  "), AUDIENCE, "", "MISSING_REQUESTING_USER"),
    (context(), "", "", "INVALID_AUDIENCE"),
    (context(), "ldap://provider", "", "INVALID_AUDIENCE"),
    (context(), AUDIENCE, "patient/*.delete", "INVALID_REQUESTED_SCOPE"),
]


async def test_bad_requests_are_invalid_argument(service: Any) -> None:
    for ctx, audience, scope, reason in BAD_REQUESTS:
        req = token_service_pb2.MintGpConnectJwtRequest(audience=audience, requested_scope=scope)
        if ctx is not None:
            req.context.CopyFrom(ctx)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await service.stub.MintGpConnectJwt(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert error_reason(err.value) == reason


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "keys_dir": str(tmp_path),
        "gpc_issuer": "https://consumer.example.nhs.uk/",
        "gpc_consumer_asid": "918999198738",
    }
    values.update(overrides)
    return Settings(**values)


def test_every_identifier_comes_from_settings_or_the_request(tmp_path: Path) -> None:
    custom = settings(
        tmp_path,
        gpc_device_identifier_system="https://consumer.example/Id/device",
        gpc_device_model="Gateway X",
        gpc_device_version="9.9",
        gpc_ods_system="https://example.org/ods",
        gpc_sds_user_id_system="https://example.org/sds-user",
        gpc_sds_role_profile_id_system="https://example.org/sds-role",
        gpc_requested_scope="patient/*.read conf/N",
        gpc_default_ods_code="Y12345",
    )
    claims = build_claims(
        custom,
        context(user_id="555000111222", user_role="444555666777", organization_id="urn:oid:9"),
        AUDIENCE,
        "",
        1_700_000_000.7,
    )
    assert claims["iss"] == "https://consumer.example.nhs.uk/"
    assert (claims["iat"], claims["exp"]) == (1_700_000_000, 1_700_000_300)
    assert claims["requested_scope"] == "patient/*.read conf/N"
    assert claims["requesting_device"]["identifier"] == [
        {"system": "https://consumer.example/Id/device", "value": "918999198738"}
    ]
    assert (claims["requesting_device"]["model"], claims["requesting_device"]["version"]) == (
        "Gateway X",
        "9.9",
    )
    assert claims["requesting_organization"]["identifier"] == [
        {"system": "https://example.org/ods", "value": "Y12345"}
    ]
    # Smartcard-shaped (12-digit) ids go to the SDS identifiers instead of UNK.
    identifiers = claims["requesting_practitioner"]["identifier"]
    assert identifiers[:3] == [
        {"system": "https://example.org/sds-user", "value": "555000111222"},
        {"system": "https://example.org/sds-role", "value": "444555666777"},
        {"system": "https://consumer.example.nhs.uk/Id/user-id", "value": "555000111222"},
    ]
    assert len(identifiers) == 3


def test_organisation_ods_code_resolution(tmp_path: Path) -> None:
    base = settings(tmp_path, gpc_organisation_ods_map={"urn:oid:1.2": "RRK"})
    mapped = build_claims(base, context(organization_id="urn:oid:1.2"), AUDIENCE, "", 0)
    direct = build_claims(base, context(organization_id="B82617"), AUDIENCE, "", 0)
    for claims, ods in ((mapped, "RRK"), (direct, "B82617")):
        assert claims["requesting_organization"]["identifier"][0]["value"] == ods
    with pytest.raises(GpConnectJwtError) as err:
        build_claims(base, context(organization_id="urn:oid:7.7"), AUDIENCE, "", 0)
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ODS_CODE_UNRESOLVED",
    )
    with pytest.raises(GpConnectJwtError) as err:
        build_claims(settings(tmp_path, gpc_consumer_asid=""), context(), AUDIENCE, "", 0)
    assert err.value.reason == "GPC_NOT_CONFIGURED"
    assert "TOKEN_SERVICE_GPC_CONSUMER_ASID" in err.value.message
    with pytest.raises(GpConnectJwtError) as err:
        build_claims(base, context(organization_name="", organization_id="RRK"), AUDIENCE, "", 0)
    assert err.value.reason == "MISSING_REQUESTING_ORGANISATION"


def test_practitioner_id_is_a_valid_fhir_id_and_matches_sub(tmp_path: Path) -> None:
    claims = build_claims(
        settings(tmp_path, gpc_default_ods_code="RRK"),
        context(user_id="Dr Jane Doe", user_name=""),
        AUDIENCE,
        "",
        0,
    )
    practitioner = claims["requesting_practitioner"]
    assert claims["sub"] == practitioner["id"]
    assert " " not in practitioner["id"] and len(practitioner["id"]) <= 64
    assert practitioner["name"] == [{"family": "Doe", "given": ["Jane"], "prefix": ["Dr"]}]
    assert {"system": "https://consumer.example.nhs.uk/Id/user-id", "value": "Dr Jane Doe"} in (
        practitioner["identifier"]
    )


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Doe, Jane", {"family": "Doe", "given": ["Jane"]}),
        ("Doe, Dr Jane Mary", {"family": "Doe", "given": ["Jane", "Mary"], "prefix": ["Dr"]}),
        ("Dr. Jane Doe", {"family": "Doe", "given": ["Jane"], "prefix": ["Dr."]}),
        ("Jane Doe", {"family": "Doe", "given": ["Jane"]}),
        ("jdoe", {"family": "jdoe"}),
        ("Dr", {"family": "Dr"}),
        ("12345^Doe^Jane^^^Prof", {"family": "Doe", "given": ["Jane"], "prefix": ["Prof"]}),
        ("  Doe ,  Jane  ", {"family": "Doe", "given": ["Jane"]}),
    ],
)
def test_names_without_a_comma_never_fail(text: str, name: dict[str, Any]) -> None:
    assert parse_person_name(text) == name
