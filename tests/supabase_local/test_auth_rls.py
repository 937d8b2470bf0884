"""Keys and tokens: the JWT's role becomes the PostgreSQL role, so RLS and grants decide."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from postgrest.exceptions import APIError

from supabase_local.auth import AuthError, mint_token, verify_token
from tests.supabase_local.conftest import event_row, make_client


@pytest.fixture
def one_row(service_client, seq_block):
    (seq,) = seq_block(1)
    service_client.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()
    return seq


def test_anon_can_neither_read_nor_write(anon_client, seq_block, one_row):
    (new_seq,) = seq_block(1)
    with pytest.raises(APIError) as read:
        anon_client.table("monitoring_events").select("seq").eq("seq", one_row).execute()
    with pytest.raises(APIError) as write:
        anon_client.table("monitoring_events").insert(event_row(new_seq)).execute()

    assert read.value.code == write.value.code == "42501"
    assert read.value.message == "permission denied for table monitoring_events"


def test_authenticated_reads_but_cannot_write(user_client, supabase_local, seq_block, one_row):
    (new_seq,) = seq_block(1)

    rows = user_client.table("monitoring_events").select("seq").eq("seq", one_row).execute()
    with pytest.raises(APIError) as write:
        user_client.table("monitoring_events").insert(event_row(new_seq)).execute()
    with pytest.raises(APIError) as delete:
        user_client.table("monitoring_events").delete().eq("seq", one_row).execute()

    assert rows.data == [{"seq": one_row}]
    assert write.value.code == delete.value.code == "42501"
    assert supabase_local.sql(
        "SELECT count(*) AS n FROM public.monitoring_events WHERE seq IN (%s, %s)",
        one_row,
        new_seq,
    ) == [{"n": 1}]


def test_service_role_writes(service_client, supabase_local, seq_block):
    (seq,) = seq_block(1)

    service_client.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()

    assert supabase_local.sql("SELECT seq FROM public.monitoring_events WHERE seq = %s", seq) == [
        {"seq": seq}
    ]


def test_statement_runs_as_the_token_role_with_its_claims(supabase_local):
    sub = str(uuid.uuid4())
    supabase_local.sql(
        "CREATE OR REPLACE FUNCTION public.sl_whoami() RETURNS jsonb LANGUAGE sql STABLE AS"
        " $$SELECT jsonb_build_object('user', current_user, 'uid', auth.uid(),"
        " 'role', auth.role(), 'email', auth.jwt() ->> 'email')$$"
    )
    try:
        token = supabase_local.mint("authenticated", sub=sub, email="ada@example.com")
        client = make_client(supabase_local, supabase_local.anon_key, access_token=token)
        answer = client.rpc("sl_whoami", {}).execute().data
    finally:
        supabase_local.sql("DROP FUNCTION public.sl_whoami()")

    assert answer == {
        "user": "authenticated",
        "uid": sub,
        "role": "authenticated",
        "email": "ada@example.com",
    }


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda s: mint_token(secret="x" * 40, role="service_role"), "PGRST301"),
        (lambda s: mint_token(secret=s.jwt_secret, role="service_role", expires_in=-10),
         "PGRST303"),
        (lambda s: mint_token(secret=s.jwt_secret, role="postgres"), "PGRST301"),
        (lambda s: jwt.encode({"role": "service_role"}, s.jwt_secret, algorithm="HS256"),
         "PGRST303"),
        (lambda s: jwt.encode({"role": "anon", "exp": int(time.time()) + 60}, s.jwt_secret,
                              algorithm="HS512"), "PGRST301"),
        (lambda s: "not-a-jwt", "PGRST301"),
    ],
    ids=["forged", "expired", "unknown-role", "no-exp", "not-hs256", "garbage"],
)  # fmt: skip
def test_bad_tokens_are_refused_401(supabase_local, make_token, code):
    token = make_token(supabase_local)
    client = make_client(supabase_local, supabase_local.anon_key, access_token=token)

    with pytest.raises(APIError) as raised:
        client.table("monitoring_events").select("seq").limit(1).execute()

    assert raised.value.code == code


def test_bearer_token_decides_the_role_over_the_apikey(supabase_local, one_row):
    # apikey says anon (which may not read), the bearer says authenticated (which may).
    token = supabase_local.mint("authenticated")
    client = make_client(supabase_local, supabase_local.anon_key, access_token=token)

    rows = client.table("monitoring_events").select("seq").eq("seq", one_row).execute()

    assert rows.data == [{"seq": one_row}]


def test_missing_key_is_401(supabase_local):
    response = httpx.get(f"{supabase_local.url}/rest/v1/monitoring_events")

    assert response.status_code == 401
    assert response.json()["message"] == "No API key found in request"


def test_invalid_apikey_is_401_even_with_a_good_bearer(supabase_local):
    response = httpx.get(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        headers={
            "apikey": mint_token(secret="y" * 40, role="anon"),
            "Authorization": f"Bearer {supabase_local.service_role_key}",
        },
    )

    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API key"


def test_verify_token_unit():
    secret = "s" * 40
    claims = verify_token(mint_token(secret=secret, role="authenticated", sub="u1"), secret=secret)
    assert (claims.role, claims.sub) == ("authenticated", "u1")
    assert claims.exp is not None and claims.exp > time.time()
    with pytest.raises(AuthError, match="expired"):
        verify_token(mint_token(secret=secret, role="anon", expires_in=-1), secret=secret)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_time_claim_that_is_not_a_number_is_refused_401(supabase_local, claim):
    # A numeric string: PyJWT would coerce it with int(); PostgREST refuses it.
    value = int(time.time()) + (600 if claim == "exp" else 0)
    token = supabase_local.mint("service_role", **{claim: str(value)})
    client = make_client(supabase_local, supabase_local.anon_key, access_token=token)

    with pytest.raises(APIError) as raised:
        client.table("monitoring_events").select("seq").limit(1).execute()

    assert (raised.value.code, raised.value.message) == (
        "PGRST303",
        f"The JWT '{claim}' claim must be a number",
    )
