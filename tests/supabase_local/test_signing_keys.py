"""Asymmetric JWT signing keys: user tokens signed with ES256 or RS256 are verified by the
key their ``kid`` names, whose public half the JWKS publishes; an unknown ``kid``, an
algorithm other than the key's, and malformed claims are refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from postgrest.exceptions import APIError
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from supabase_local.auth import AuthError, TokenVerifier, mint_token
from supabase_local.signing_keys import (
    jwk_thumbprint,
    signing_key_from_pem,
    signing_key_generate,
)
from tests.fixtures.supabase_local import SupabaseLocal, running_supabase_local
from tests.supabase_local.conftest import make_client

REPO_ROOT = Path(__file__).resolve().parents[2]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture(scope="module")
def no_jwt_secret() -> Iterator[SupabaseLocal]:
    """A project that has moved off its HS256 secret: only the asymmetric keys verify."""
    with running_supabase_local(jwt_secret=False, legacy_keys=False, faults=False) as server:
        yield server


def _whoami(server: SupabaseLocal, token: str) -> dict:
    client = make_client(server, server.publishable_key, access_token=token)
    return client.rpc("sl_whoami_keys", {}).execute().data


@pytest.fixture
def whoami_function(supabase_local):
    supabase_local.sql(
        "CREATE OR REPLACE FUNCTION public.sl_whoami_keys() RETURNS jsonb LANGUAGE sql STABLE"
        " AS $$SELECT jsonb_build_object('user', current_user, 'uid', auth.uid())$$"
    )
    yield
    supabase_local.sql("DROP FUNCTION public.sl_whoami_keys()")


# -- the JWKS ------------------------------------------------------------------------------


def test_the_jwks_publishes_the_public_half_of_every_signing_key(supabase_local):
    response = httpx.get(f"{supabase_local.url}/auth/v1/.well-known/jwks.json")

    keys = response.json()["keys"]
    assert response.status_code == 200
    assert [(key["kid"], key["alg"]) for key in keys] == [
        (key.kid, key.alg) for key in supabase_local.signing_keys
    ]
    assert {key["kty"] for key in keys} == {"EC", "RSA"}
    assert all(key["use"] == "sig" and not PRIVATE_JWK_MEMBERS & set(key) for key in keys)
    # The kid defaults to the key's RFC 7638 thumbprint.
    assert all(key["kid"] == jwk_thumbprint(key) for key in keys)


def test_a_jwks_key_verifies_a_token_the_way_a_third_party_would(supabase_local):
    token = supabase_local.mint_signed("authenticated", sub="u-42", alg="RS256")
    jwks = jwt.PyJWKClient(f"{supabase_local.url}/auth/v1/.well-known/jwks.json")

    claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["RS256"])

    assert claims["sub"] == "u-42"


def test_rfc_7638_thumbprint_of_the_rfcs_own_example():
    # RFC 7638 §3.1: this RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTW"
        "hAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert (
        jwk_thumbprint({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"})
        == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )


# -- user tokens through the official client ------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_signed_user_token_runs_as_that_user(supabase_local, whoami_function, alg):
    sub = str(uuid.uuid4())

    answer = _whoami(supabase_local, supabase_local.mint_signed("authenticated", sub, alg=alg))

    assert answer == {"user": "authenticated", "uid": sub}


def _refusal(server: SupabaseLocal, token: str) -> APIError:
    client = make_client(server, server.publishable_key, access_token=token)
    with pytest.raises(APIError) as raised:
        client.table("monitoring_events").select("seq").limit(1).execute()
    return raised.value


def _unsigned(header: dict, claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _confused(server: SupabaseLocal) -> str:
    """HS256 signed with the ES256 key's public PEM as the HMAC secret, naming that key."""
    key = server.signing_keys[0]
    public_pem = key.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    claims = {"role": "service_role", "exp": int(time.time()) + 60}
    signing_input = _unsigned(header, claims)[:-1].encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("make_token", "code", "message"),
    [
        (lambda s: mint_token(signing_key=signing_key_generate("ES256"), role="authenticated"),
         "PGRST301", "No suitable key or wrong key type"),
        (lambda s: mint_token(signing_key=signing_key_generate("RS256", kid=s.signing_keys[0].kid),
                              role="authenticated"),
         "PGRST301", "No suitable key or wrong key type"),
        (_confused, "PGRST301", "No suitable key or wrong key type"),
        (lambda s: _unsigned({"alg": "none", "kid": s.signing_keys[0].kid},
                             {"role": "service_role", "exp": int(time.time()) + 60}),
         "PGRST301", "No suitable key or wrong key type"),
        (lambda s: s.mint_signed("authenticated", exp=str(int(time.time()) + 600)),
         "PGRST303", "The JWT 'exp' claim must be a number"),
        (lambda s: s.mint_signed("authenticated", expires_in=-5), "PGRST303", "JWT expired"),
        (lambda s: jwt.encode({"role": "authenticated", "exp": int(time.time()) + 60},
                              signing_key_generate("ES256").private_pem(), algorithm="ES256",
                              headers={"kid": s.signing_keys[0].kid}),
         "PGRST301", "JWSError JWSInvalidSignature"),
    ],
    ids=["unknown-kid", "alg-other-than-the-keys", "hs256-with-the-public-key", "alg-none",
         "exp-a-string", "expired", "signed-by-another-key-same-kid"],
)  # fmt: skip
def test_bad_signed_tokens_are_refused(supabase_local, make_token, code, message):
    error = _refusal(supabase_local, make_token(supabase_local))

    assert (error.code, error.message) == (code, message)


# -- a project without the HS256 secret ------------------------------------------------------


def test_without_the_jwt_secret_hs256_tokens_are_refused_and_signed_ones_work(no_jwt_secret):
    legacy_style = mint_token(secret="a" * 40, role="service_role")

    error = _refusal(no_jwt_secret, legacy_style)
    rows = (
        make_client(
            no_jwt_secret,
            no_jwt_secret.publishable_key,
            access_token=no_jwt_secret.mint_signed("authenticated", str(uuid.uuid4())),
        )
        .table("monitoring_events")
        .select("seq")
        .limit(1)
        .execute()
    )

    assert error.message == "No suitable key or wrong key type"
    assert rows.data == []


# -- Realtime ----------------------------------------------------------------------------------


async def _join_state(server: SupabaseLocal, access_token: str) -> RealtimeSubscribeStates:
    client = AsyncRealtimeClient(f"{server.url}/realtime/v1", server.publishable_key)
    states: list = []
    try:
        await client.set_auth(access_token)
        channel = client.channel(f"signed-{uuid.uuid4().hex[:8]}")
        await asyncio.wait_for(channel.subscribe(lambda state, _err=None: states.append(state)), 10)
        for _ in range(200):
            if states:
                return states[0]
            await asyncio.sleep(0.05)
        raise AssertionError("no join reply")
    finally:
        await asyncio.wait_for(client.close(), 5)


async def test_realtime_joins_with_a_signed_token_and_refuses_an_unknown_kid(supabase_local):
    good = supabase_local.mint_signed("authenticated", str(uuid.uuid4()), alg="ES256")
    stranger = mint_token(signing_key=signing_key_generate("ES256"), role="authenticated")

    assert await _join_state(supabase_local, good) == RealtimeSubscribeStates.SUBSCRIBED
    assert await _join_state(supabase_local, stranger) == RealtimeSubscribeStates.CHANNEL_ERROR


# -- the command line and units -------------------------------------------------------------------


def _start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supabase_local", "--database-url", "postgresql://x/y", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--signing-key", "/no/such/key.pem"), "cannot read /no/such/key.pem"),
        (("--signing-key", __file__), "not a PEM private or public key"),
        (("--signing-key-id", "k1"), "--signing-key-id names more keys"),
        (("--jwt-secret", "off"), "--jwt-secret off needs at least one --signing-key"),
        (("--publishable-key", "sb_secret_abcdefghijklmnopqrstuvwxyz"), "--publishable-key: must"),
        (("--secret-key", "sb_secret_short"), "--secret-key: must start with sb_secret_"),
    ],
    ids=["missing-file", "not-a-key", "kid-without-key", "no-way-to-verify", "wrong-kind",
         "too-short"],
)  # fmt: skip
def test_bad_key_options_exit_2_with_a_message(args, message):
    result = _start(*args)

    assert result.returncode == 2
    assert message in result.stderr


def test_verifier_unit_kid_from_option_and_public_only_keys(tmp_path):
    private = signing_key_generate("ES256", kid="my-key-2026")
    public_pem = private.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    verify_only = signing_key_from_pem(public_pem, kid="my-key-2026")
    verifier = TokenVerifier(hs256_secret=None, signing_keys=(verify_only,))

    claims = verifier.verify(mint_token(signing_key=private, role="authenticated", sub="u1"))

    assert (claims.role, claims.sub) == ("authenticated", "u1")
    with pytest.raises(AuthError, match="No suitable key"):
        verifier.verify(mint_token(secret="h" * 40, role="service_role"))
