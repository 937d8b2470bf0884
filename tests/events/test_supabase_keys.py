"""The signing key user tokens are minted with (events/supabase_keys.py).

``SUPABASE_JWT_SIGNING_KEY`` holds PEM text or the path of a PEM file; its ``kid`` is
``SUPABASE_JWT_SIGNING_KEY_ID`` or else the RFC 7638 thumbprint, the id supabase_local (and
Supabase) give the same key. Anything that cannot sign ES256/RS256 is refused with a
message that names the setting and never shows the key.
"""

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from events.supabase_keys import SigningKeyError, signing_key_load
from supabase_local.signing_keys import signing_key_from_pem, signing_key_generate


def pem_of(private_key, *, password: bytes | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_key_signs_with_its_algorithm_and_the_kid_supabase_local_publishes(alg):
    server_key = signing_key_generate(alg)
    pem = server_key.private_pem().decode()

    key = signing_key_load(pem)

    assert (key.alg, key.kid) == (alg, server_key.kid)  # same thumbprint on both sides
    assert key.public_jwk() == {
        name: value
        for name, value in server_key.public_jwk().items()
        if name not in ("use", "key_ops")  # what a JWKS adds around the key
    }
    token = key.sign({"sub": "7", "role": "authenticated"})
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": key.kid, "typ": "JWT"}
    assert jwt.decode(token, server_key.public_key, algorithms=[alg])["sub"] == "7"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_the_private_jwk_to_import_into_the_project_names_the_same_key_and_kid(alg):
    key = signing_key_load(signing_key_generate(alg).private_pem().decode())
    jwk = key.private_jwk()
    assert (jwk["kid"], jwk["alg"]) == (key.kid, alg)
    assert "d" in jwk  # the private half: Supabase signs nothing with a public key
    token = key.sign({"sub": "7"})
    public = jwt.PyJWK(jwk).key.public_key()
    assert jwt.decode(token, public, algorithms=[alg])["sub"] == "7"


def test_a_path_to_a_pem_file_is_read_and_a_given_kid_wins(tmp_path):
    server_key = signing_key_generate("ES256", kid="monitor-2026-11")
    path = tmp_path / "signing.pem"
    path.write_bytes(server_key.private_pem())

    key = signing_key_load(str(path), kid="monitor-2026-11")

    assert (key.alg, key.kid) == ("ES256", "monitor-2026-11")
    assert signing_key_from_pem(path.read_bytes()).kid == signing_key_load(str(path)).kid


def test_the_key_never_shows_in_its_repr():
    pem = signing_key_generate("ES256").private_pem().decode()
    key = signing_key_load(pem)
    assert repr(key) == f"JwtSigningKey(kid={key.kid!r}, alg='ES256')"
    assert "PRIVATE" not in repr(key) and pem.splitlines()[1][:20] not in repr(key)


PUBLIC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (PUBLIC_PEM, "is a public key; Monitor signs user tokens, so it needs the private key"),
        (pem_of(ec.generate_private_key(ec.SECP384R1())), "is an EC key on secp384r1"),
        (
            pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "is an RSA key of 1024 bits; RS256 needs at least 2048",
        ),
        (pem_of(ed25519.Ed25519PrivateKey.generate()), "it must be an EC P-256"),
        (pem_of(ec.generate_private_key(ec.SECP256R1()), password=b"pw"), "is an encrypted"),
        ("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not a PEM"),
        ("/nonexistent/monitor-signing.pem", "nor a readable PEM file"),
    ],
    ids=["public", "p384", "rsa1024", "ed25519", "encrypted", "garbage", "missing-file"],
)
def test_a_key_that_cannot_sign_es256_or_rs256_is_refused_naming_the_setting(value, reason):
    with pytest.raises(SigningKeyError) as refused:
        signing_key_load(value)
    message = str(refused.value)
    assert message.startswith("SUPABASE_JWT_SIGNING_KEY ")
    assert reason in message
    body = [line for line in value.splitlines() if line and "-----" not in line]
    assert not any(line[:24] in message for line in body)  # the key's text is not echoed
