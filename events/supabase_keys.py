"""The JWT signing key Monitor mints its users' Supabase tokens with.

A project created today signs user tokens with asymmetric keys (ES256 on P-256, or RS256)
and publishes their public halves as a JWKS; a token names its key by ``kid``. Monitor
mints its own tokens, so the operator imports a private key of ours into the project's
JWT signing keys and gives Monitor the same key in ``SUPABASE_JWT_SIGNING_KEY``: the PEM
text itself, or the path of a PEM file. Its ``kid`` is ``SUPABASE_JWT_SIGNING_KEY_ID``,
or else the key's RFC 7638 thumbprint (the SHA-256 of its required public JWK members),
so the same key always has the same id.

Invariants: the key must be a private key (a public one cannot sign), EC on P-256 or RSA
of at least 2048 bits; no error message, ``repr`` or log line carries the key's text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

SIGNING_KEY_SETTING = "SUPABASE_JWT_SIGNING_KEY"
PEM_MARKER = "-----BEGIN"
MIN_RSA_BITS = 2048
# RFC 7638 §3.2: the members a thumbprint covers, per key type.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


class SigningKeyError(ValueError):
    """The configured signing key cannot sign user tokens; the text says why (never the key)."""


@dataclass(frozen=True)
class JwtSigningKey:
    kid: str
    alg: str  # ES256 | RS256
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)

    def __repr__(self) -> str:  # the private half never reaches a traceback or a log
        return f"JwtSigningKey(kid={self.kid!r}, alg={self.alg!r})"

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers={"kid": self.kid})

    def private_jwk(self) -> dict[str, Any]:
        """The whole key as a JWK with its ``kid``: what the project's "import a private
        key" dialog takes (docs/supabase.md). A secret; the operator's terminal only."""
        algorithm = ECAlgorithm if self.alg == "ES256" else RSAAlgorithm
        return {**json.loads(algorithm.to_jwk(self.private_key)), "kid": self.kid, "alg": self.alg}

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWKS lists it (what the project must publish)."""
        jwk = _public_members(self.private_key.public_key())
        members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
        return {**members, "kid": self.kid, "alg": self.alg}


def _public_members(public_key: Any) -> dict[str, Any]:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return json.loads(ECAlgorithm.to_jwk(public_key))
    return json.loads(RSAAlgorithm.to_jwk(public_key))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, no white space, base64url."""
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _pem_bytes(value: str, *, setting: str) -> bytes:
    """The PEM text itself, or the contents of the file the value names."""
    if PEM_MARKER in value:
        return value.encode("utf-8")
    path = Path(value.strip()).expanduser()
    try:
        return path.read_bytes()
    except OSError as error:
        # The value is not echoed: a mangled key pasted without its header is still a secret.
        raise SigningKeyError(
            f"{setting} is neither PEM text (-----BEGIN PRIVATE KEY-----…) nor a readable "
            f"PEM file ({error.strerror or error})"
        ) from None


def _private_key(pem: bytes, *, setting: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SigningKeyError(
            f"{setting} is an encrypted private key; give it unencrypted "
            "(openssl pkcs8 -topk8 -nocrypt)"
        ) from None
    except ValueError:
        try:
            serialization.load_pem_public_key(pem)
        except ValueError:
            raise SigningKeyError(f"{setting} is not a PEM private key") from None
        raise SigningKeyError(
            f"{setting} is a public key; Monitor signs user tokens, so it needs the "
            "private key (the project keeps only the public half)"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(
                f"{setting} is an EC key on {key.curve.name}; Supabase signs ES256 on "
                "P-256 (prime256v1) only"
            )
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(
                f"{setting} is an RSA key of {key.key_size} bits; RS256 needs at least "
                f"{MIN_RSA_BITS}"
            )
        return key
    raise SigningKeyError(
        f"{setting} is a {type(key).__name__.removeprefix('_')}; it must be an EC P-256 "
        "(ES256) or an RSA (RS256) private key"
    )


@functools.lru_cache(maxsize=4)
def signing_key_load(
    value: str, *, kid: str = "", setting: str = SIGNING_KEY_SETTING
) -> JwtSigningKey:
    """The signing key a setting holds (PEM text or a path), with its ``kid``.

    Cached: a process loads its key once, not once per token.
    """
    private_key = _private_key(_pem_bytes(value, setting=setting), setting=setting)
    alg = "ES256" if isinstance(private_key, ec.EllipticCurvePrivateKey) else "RS256"
    kid = kid.strip() or jwk_thumbprint(_public_members(private_key.public_key()))
    return JwtSigningKey(kid=kid, alg=alg, private_key=private_key)


def signing_key_generate_pem() -> bytes:
    """A fresh ES256 (P-256) private key as unencrypted PKCS#8 PEM, for a dev stack."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
