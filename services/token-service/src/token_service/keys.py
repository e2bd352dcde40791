"""RSA signing keys on disk: one PEM per kid (`<kid>.pem`), public JWKs and the JWKS document.

Blocking file and CPU work (RSA generation) lives here as plain functions; async callers run them
with `asyncio.to_thread`. Nothing here logs or returns private key material: callers only ever
get `SigningKey.public_jwk()` or a signature made with the key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

log = logging.getLogger(__name__)

# nhs-apis.md §2.2/§2.4: assertions are signed RS512; the JWKS advertises alg and use.
SIGNING_ALG = "RS512"
MIN_KEY_BITS = 2048

_KID_RE = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")
_PUBLIC_MEMBERS = ("kty", "n", "e")


class KeyFileError(ValueError):
    """A key file or kid is unusable (message never holds key material)."""


def valid_kid(kid: str) -> bool:
    """kids double as file names: letters, digits, `.`, `_`, `-`; no leading dot."""
    return bool(_KID_RE.fullmatch(kid))


@dataclass(frozen=True)
class SigningKey:
    """A private RSA key and its kid. `repr` never shows the key."""

    kid: str
    key: jwk.JWK = field(repr=False)
    mtime: float = 0.0

    def public_jwk(self) -> dict[str, str]:
        """The public JWK as published: kty, n, e, alg RS512, kid, use sig."""
        public = self.key.export_public(as_dict=True)
        doc = {name: str(public[name]) for name in _PUBLIC_MEMBERS}
        doc.update({"alg": SIGNING_ALG, "kid": self.kid, "use": "sig"})
        return doc


def generate_private_key(bits: int = 4096) -> rsa.RSAPrivateKey:
    """A new RSA key (nhs-apis.md §2.4: `openssl genrsa 4096`)."""
    if bits < MIN_KEY_BITS:
        raise KeyFileError(f"RSA keys must have at least {MIN_KEY_BITS} bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (the file is protected by its mode and the secret mount)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def thumbprint_kid(key: jwk.JWK) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: the kid when none is configured."""
    return str(key.thumbprint())


def signing_key_from_pem(data: bytes, kid: str | None = None, mtime: float = 0.0) -> SigningKey:
    """Parse an RSA private key PEM (PKCS#1 or PKCS#8, unencrypted)."""
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError("not an unencrypted PEM private key") from exc
    if not isinstance(private, rsa.RSAPrivateKey):
        raise KeyFileError("not an RSA private key")
    if private.key_size < MIN_KEY_BITS:
        raise KeyFileError(f"RSA key shorter than {MIN_KEY_BITS} bits")
    key = jwk.JWK.from_pyca(private)
    kid = kid or thumbprint_kid(key)
    if not valid_kid(kid):
        raise KeyFileError("invalid kid (letters, digits, '.', '_', '-'; no leading dot)")
    return SigningKey(kid=kid, key=key, mtime=mtime)


def load_key_file(path: Path) -> SigningKey:
    """Load `<kid>.pem`: the file name is the kid."""
    return signing_key_from_pem(path.read_bytes(), kid=path.stem, mtime=path.stat().st_mtime)


def scan_keys_dir(directory: Path) -> dict[str, SigningKey]:
    """Every usable `<kid>.pem` in the directory; unusable files are logged and skipped."""
    keys: dict[str, SigningKey] = {}
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob("*.pem")):
        if not path.is_file() or not valid_kid(path.stem):
            continue
        try:
            key = load_key_file(path)
        except (KeyFileError, OSError) as exc:
            log.warning("skipping key file", extra={"ecs": {"file.name": path.name}})
            log.debug("key file error: %s", exc)
            continue
        keys[key.kid] = key
    return keys


def write_key_file(directory: Path, kid: str, pem: bytes) -> Path:
    """Write `<kid>.pem` atomically with mode 0600; never overwrite an existing key."""
    if not valid_kid(kid):
        raise KeyFileError("invalid kid (letters, digits, '.', '_', '-'; no leading dot)")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{kid}.pem"
    if target.exists():
        raise KeyFileError(f"a key with kid {kid!r} already exists")
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".key", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        # Replicas scanning the directory see either no file or the complete key; a hard
        # link (unlike rename) also refuses to replace a key another rotator just wrote.
        try:
            os.link(tmp_name, target)
        except FileExistsError as exc:
            raise KeyFileError(f"a key with kid {kid!r} already exists") from exc
        except OSError:
            # Filesystems without hard links: rename is still atomic.
            os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return target


def generate_key_file(directory: Path, bits: int = 4096, kid: str | None = None) -> SigningKey:
    """Generate an RSA key, write `<kid>.pem` and return it (kid: given or RFC 7638)."""
    private = generate_private_key(bits)
    pem = private_key_pem(private)
    key = signing_key_from_pem(pem, kid=kid)
    path = write_key_file(directory, key.kid, pem)
    return SigningKey(kid=key.kid, key=key.key, mtime=path.stat().st_mtime)


def delete_key_file(directory: Path, kid: str) -> bool:
    """Remove a retired key's private PEM when the directory allows it (best effort)."""
    if not valid_kid(kid):
        return False
    try:
        (directory / f"{kid}.pem").unlink()
    except OSError:
        return False
    return True


def directory_writable(directory: Path) -> bool:
    """True when new keys can be written (a Kubernetes secret mount is read-only)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def jwks_document(public_jwks: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """nhs-apis.md §2.4: always a `{"keys": [...]}` set, never a bare JWK."""
    return {"keys": [dict(k) for k in public_jwks]}
