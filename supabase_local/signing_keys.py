"""JWT signing keys as a Supabase project has them at the end of 2026: asymmetric (ES256 on
P-256, or RS256), each named by a ``kid``, their public halves published as a JWKS at
``/auth/v1/.well-known/jwks.json``.

A key is loaded from a PEM file holding its private key (what a user imports into a
project to mint their own tokens) or only its public key (enough to verify). Its ``kid``
is the one given, or else the key's RFC 7638 thumbprint: the SHA-256 of its required
JWK members, so the same key always gets the same id.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
# RFC 7638 §3.2: the members a thumbprint covers, per key type.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class SigningKeyError(ValueError):
    """A key file that cannot serve as a signing key; the text says why."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # ES256 | RS256
    public_key: PublicKey
    private_key: PrivateKey | None = None

    def public_jwk(self) -> dict[str, Any]:
        """The key as the JWKS publishes it."""
        jwk = _public_members(self.public_key)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig", "key_ops": ["verify"]}

    def private_pem(self) -> bytes:
        if self.private_key is None:
            raise SigningKeyError(f"signing key {self.kid} has no private half")
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _public_members(public_key: PublicKey) -> dict[str, Any]:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return json.loads(ECAlgorithm.to_jwk(public_key))
    return json.loads(RSAAlgorithm.to_jwk(public_key))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no white space,
    base64url without padding."""
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _algorithm_for(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            curve = public_key.curve.name
            raise SigningKeyError(f"an EC signing key must be on P-256, not {curve}")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(f"an RSA signing key needs at least {MIN_RSA_BITS} bits")
        return "RS256"
    raise SigningKeyError("a signing key must be an EC P-256 or an RSA key")


def signing_key_from_pem(pem: bytes, *, kid: str | None = None) -> SigningKey:
    """A key from PEM text: a private key (signs and verifies) or a public key (verifies)."""
    private_key = None
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        try:
            public_key = serialization.load_pem_public_key(pem)
        except ValueError as error:
            raise SigningKeyError(
                "not a PEM private or public key (an encrypted key is not supported)"
            ) from error
    else:
        private_key = loaded
        public_key = loaded.public_key()
    alg = _algorithm_for(public_key)
    kid = kid or jwk_thumbprint(_public_members(public_key))
    return SigningKey(kid=kid, alg=alg, public_key=public_key, private_key=private_key)  # type: ignore[arg-type]


def signing_key_load(path: Path, *, kid: str | None = None) -> SigningKey:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise SigningKeyError(f"cannot read {path}: {error.strerror}") from error
    try:
        return signing_key_from_pem(pem, kid=kid)
    except SigningKeyError as error:
        raise SigningKeyError(f"{path}: {error}") from error


def signing_key_generate(alg: str = "ES256", *, kid: str | None = None) -> SigningKey:
    """A fresh key, for tests and for a development stack that has none configured."""
    if alg == "ES256":
        private_key: PrivateKey = ec.generate_private_key(ec.SECP256R1())
    elif alg == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    else:
        raise SigningKeyError(f"alg must be one of {', '.join(ASYMMETRIC_ALGORITHMS)}")
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return signing_key_from_pem(pem, kid=kid)


def jwks_document(keys: tuple[SigningKey, ...]) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}
