"""Partner registry and partner identity from verified client certificates (mTLS / proxy)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding
from soap_edge_security_kit import Pki

from soap_edge.security import errors
from soap_edge.security.mtls import (
    ProxyTrust,
    TlsPeerH11Protocol,
    build_ssl_context,
    identity_from_scope,
    parse_forwarded_certificate,
    resolve_partner,
)
from soap_edge.security.partners import PartnerConfigError, PartnerRegistry, fingerprint
from xcagw_common.testing import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def write_registry(pki: Pki, directory: Path, *, yaml: bool = True, **extra: Any) -> Path:
    fp = fingerprint(pki.partner.cert).upper()
    colons = ":".join(fp[i : i + 2] for i in range(0, len(fp), 2))
    if yaml:
        path = directory / "partners.yaml"
        path.write_text(
            f"""
partners:
  - id: epic
    name: Epic test gateway
    client_certificates:
      - sha256: "{colons}"
    home_community_ids: ["1.2.840.114350.1.13.525.3.7.3.688884.100"]
    transactions: [ITI-38, ITI-39]
    saml:
      issuer_certificates: [{pki.issuer.cert_file}]
      subject_confirmation_methods: [bearer]
    rate_limit: {{per_second: 5, burst: 10}}
    transaction_rate_limits:
      ITI-39: {{per_second: 1, burst: 2}}
    async_reply_to: ["https://epic.example/replies/"]
  - id: by-name
    client_certificates:
      - subject: "O=xcagw tests,CN=stranger-gw"
        issuer: "O=xcagw tests,CN=xcagw test CA"
"""
        )
    else:
        path = directory / "partners.json"
        path.write_text(
            json.dumps(
                {
                    "partners": [
                        {"id": "epic", "client_certificates": [{"sha256": fp}], **extra},
                    ]
                }
            )
        )
    return path


# ---- registry -----------------------------------------------------------------------------------
def test_yaml_registry_loads_and_matches_by_fingerprint_and_by_name(
    pki: Pki, tmp_path: Path
) -> None:
    registry = PartnerRegistry.load(write_registry(pki, tmp_path))
    epic = registry.match_certificate(pki.partner.cert)
    assert epic is not None and epic.id == "epic"
    assert epic.home_community_ids == {"urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"}
    assert epic.allows("ITI-38") and not epic.allows("ITI-47")
    assert len(epic.issuer_certificates) == 1
    assert epic.config.transaction_rate_limits["ITI-39"].burst == 2
    other = registry.match_certificate(pki.stranger.cert)
    assert other is not None and other.id == "by-name"
    assert registry.match_certificate(pki.server.cert) is None


def test_json_registry(pki: Pki, tmp_path: Path) -> None:
    registry = PartnerRegistry.load(write_registry(pki, tmp_path, yaml=False))
    assert registry.match_certificate(pki.partner.cert) is not None


@pytest.mark.parametrize(
    "data",
    [
        {"partners": [{"id": "bad id!"}]},
        {"partners": [{"id": "a", "transactions": ["ITI-99"]}]},
        {"partners": [{"id": "a", "unknown_field": 1}]},
        {"partners": [{"id": "a", "client_certificates": [{"sha256": "xyz"}]}]},
        {"partners": [{"id": "a", "async_reply_to": ["http://plain.example/"]}]},
        {"partners": [{"id": "a"}, {"id": "a"}]},
        {"anonymous_partner": "ghost", "partners": []},
        {"partners": [{"id": "a", "saml": {"issuer_certificates": ["/nonexistent.pem"]}}]},
    ],
)
def test_invalid_registries_fail_at_start_up(data: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(PartnerConfigError):
        PartnerRegistry.from_mapping(data, base_dir=tmp_path)


def test_same_certificate_for_two_partners_is_refused(pki: Pki, tmp_path: Path) -> None:
    fp = fingerprint(pki.partner.cert)
    data = {
        "partners": [
            {"id": "a", "client_certificates": [{"sha256": fp}]},
            {"id": "b", "client_certificates": [{"sha256": fp}]},
        ]
    }
    with pytest.raises(PartnerConfigError):
        PartnerRegistry.from_mapping(data, base_dir=tmp_path)


# ---- identity from the ASGI scope ---------------------------------------------------------------
def _scope(client: str = "10.0.0.5", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "client": (client, 40000), "headers": headers or []}


def test_tls_extension_wins(pki: Pki) -> None:
    scope = _scope()
    scope["extensions"] = {"tls": {"client_cert_chain": [pki.partner.cert_pem]}}
    identity = identity_from_scope(scope, ProxyTrust())
    assert identity is not None and identity.source == "tls"
    assert identity.fingerprint == fingerprint(pki.partner.cert)


@pytest.mark.parametrize("form", ["nginx", "plain-pem", "der", "xfcc"])
def test_forwarded_header_from_a_trusted_proxy(pki: Pki, form: str) -> None:
    pem = pki.partner.cert_pem
    der = pki.partner.cert.public_bytes(Encoding.DER)
    import base64

    value = {
        "nginx": quote(pem),
        "plain-pem": pem.replace("\n", " "),
        "der": base64.b64encode(der).decode(),
        "xfcc": f'By=spiffe://ingress;Hash=abc;Cert="{quote(pem)}";Subject="CN=partner-gw"',
    }[form]
    proxy = ProxyTrust.of(["10.0.0.0/8"], "X-Client-Cert")
    scope = _scope(headers=[(b"x-client-cert", value.encode("latin-1"))])
    identity = identity_from_scope(scope, proxy)
    assert identity is not None and identity.source == "proxy"
    assert identity.certificate == pki.partner.cert


def test_forwarded_header_from_anyone_else_is_ignored(pki: Pki) -> None:
    proxy = ProxyTrust.of(["10.0.0.0/8"], "x-client-cert")
    scope = _scope(
        client="203.0.113.9", headers=[(b"x-client-cert", quote(pki.partner.cert_pem).encode())]
    )
    assert identity_from_scope(scope, proxy) is None
    # And with no proxies configured at all, the header is never read.
    scope = _scope(headers=[(b"x-client-cert", quote(pki.partner.cert_pem).encode())])
    assert identity_from_scope(scope, ProxyTrust()) is None


def test_garbage_header_is_not_a_certificate() -> None:
    assert parse_forwarded_certificate("not a certificate") is None
    assert parse_forwarded_certificate("") is None


def test_resolve_partner(pki: Pki, tmp_path: Path) -> None:
    registry = PartnerRegistry.load(write_registry(pki, tmp_path))
    scope = _scope()
    scope["extensions"] = {"tls": {"client_cert_chain": [pki.partner.cert_pem]}}
    assert resolve_partner(identity_from_scope(scope, ProxyTrust()), registry).id == "epic"
    with pytest.raises(errors.ClientCertificateRequired) as missing:
        resolve_partner(None, registry)
    assert missing.value.subcode == errors.FAILED_AUTHENTICATION
    scope["extensions"] = {"tls": {"client_cert_chain": [pki.server.cert_pem]}}
    with pytest.raises(errors.UnknownPartner):
        resolve_partner(identity_from_scope(scope, ProxyTrust()), registry)


def test_anonymous_partner_for_development(tmp_path: Path) -> None:
    registry = PartnerRegistry.from_mapping(
        {"anonymous_partner": "dev", "partners": [{"id": "dev", "saml": {"required": False}}]},
        base_dir=tmp_path,
    )
    assert resolve_partner(None, registry).id == "dev"


# ---- real TLS: uvicorn with required client certificates ----------------------------------------
async def _whoami(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    registry: PartnerRegistry = _whoami.registry  # type: ignore[attr-defined]
    identity = identity_from_scope(scope, ProxyTrust())
    try:
        body = resolve_partner(identity, registry).id.encode()
        status = 200
    except errors.SecurityError as exc:
        body, status = exc.metric_reason.encode(), 403
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_uvicorn_tls_puts_the_verified_client_cert_in_the_scope(
    pki: Pki, tmp_path: Path
) -> None:
    _whoami.registry = PartnerRegistry.load(write_registry(pki, tmp_path))  # type: ignore[attr-defined]
    port = free_port()
    ctx = build_ssl_context(
        str(pki.server.cert_file), str(pki.server.key_file), str(pki.ca.cert_file)
    )
    config = uvicorn.Config(
        _whoami,
        host="127.0.0.1",
        port=port,
        http=TlsPeerH11Protocol,
        ssl_certfile=str(pki.server.cert_file),
        ssl_keyfile=str(pki.server.key_file),
        ssl_context_factory=lambda _config, _default: ctx,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    try:
        url = f"https://127.0.0.1:{port}/"

        def client_ctx(cert: Any) -> ssl.SSLContext:
            c = ssl.create_default_context(cafile=str(pki.ca.cert_file))
            if cert is not None:
                c.load_cert_chain(str(cert.cert_file), str(cert.key_file))
            return c

        async with httpx.AsyncClient(verify=client_ctx(pki.partner)) as client:
            response = await client.get(url)
        assert response.status_code == 200 and response.text == "epic"

        async with httpx.AsyncClient(verify=client_ctx(pki.stranger)) as client:
            response = await client.get(url)
        assert response.text == "by-name"

        # Without a client certificate the TLS handshake itself is refused.
        async with httpx.AsyncClient(verify=client_ctx(None)) as client:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await client.get(url)
    finally:
        server.should_exit = True
        await task


# ---- the shipped registry files ------------------------------------------------------------------
CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_dev_registry_is_development_only() -> None:
    registry = PartnerRegistry.load(CONFIG / "partners.dev.yaml")
    assert registry.anonymous_partner is not None
    assert registry.insecure_settings()  # refused unless SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS


def test_example_registry_is_valid() -> None:
    import yaml

    from soap_edge.security.partners import RegistryModel

    model = RegistryModel.model_validate(
        yaml.safe_load((CONFIG / "partners.example.yaml").read_text())
    )
    assert [p.id for p in model.partners] == ["epic-uclh", "nhn-test"]
    assert model.anonymous_partner is None
