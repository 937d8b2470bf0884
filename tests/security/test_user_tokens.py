"""What a browser's minted token may do in Supabase, through the official Python client.

The token comes from ``events.supabase_client.user_access_token_mint`` (role
``authenticated``, ``sub`` = the user id, signed ES256 with ``SUPABASE_JWT_SIGNING_KEY``,
its ``kid`` in the header) and is sent with the publishable key, as supabase-js in the
dashboard does. It reads
``monitoring_events``; it cannot insert, update or delete rows, nor call the
service-role-only reconciliation RPC; once expired it is refused with 401.
"""

import time

import httpx
import jwt
import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from events.services import event_publish
from events.supabase_client import user_access_token_mint
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from supabase_local.signing_keys import signing_key_generate
from tests.fixtures.supabase_settings import es256_signing_key

pytestmark = pytest.mark.django_db

TABLE = "monitoring_events"


def user_client(server, token: str) -> Client:
    options = ClientOptions(
        headers={"Authorization": f"Bearer {token}"},
        httpx_client=httpx.Client(timeout=10),
        postgrest_client_retry=False,
    )
    return create_client(server.url, server.publishable_key, options=options)


@pytest.fixture
def mirrored_seq(django_supabase) -> int:
    """One event published through Django and flushed to supabase_local by the sink."""
    supabase_breaker().close()
    django_supabase.clear_faults()
    seq = event_publish(event_type="tool.call", source="rls", payload={"n": 1}).seq
    assert supabase_sink_flush().sent == 1
    return seq


def row_count(server, seq: int) -> list[dict]:
    return server.sql("SELECT seq, source FROM public.monitoring_events WHERE seq = %s", seq)


def test_a_minted_user_token_reads_monitoring_events(django_supabase, mirrored_seq, user):
    client = user_client(django_supabase, user_access_token_mint(user_id=user.pk))
    rows = client.table(TABLE).select("seq, source").eq("seq", mirrored_seq).execute()
    assert rows.data == [{"seq": mirrored_seq, "source": "rls"}]


def test_a_minted_user_token_cannot_insert_update_or_delete(django_supabase, mirrored_seq, user):
    client = user_client(django_supabase, user_access_token_mint(user_id=user.pk))
    table = client.table
    forged = {
        "seq": mirrored_seq + 1000, "event_type": "forged", "source": "attacker",
        "criticality": "critical", "occurred_at": "2026-01-01T00:00:00Z",
        "received_at": "2026-01-01T00:00:00Z", "payload": {}, "checksum": "0" * 64,
    }  # fmt: skip
    attempts = {
        "insert": lambda: table(TABLE).insert(forged).execute(),
        "upsert": lambda: table(TABLE).upsert(forged, on_conflict="seq").execute(),
        "update": lambda: table(TABLE).update({"source": "x"}).eq("seq", mirrored_seq).execute(),
        "delete": lambda: table(TABLE).delete().eq("seq", mirrored_seq).execute(),
    }
    for name, attempt in attempts.items():
        with pytest.raises(APIError) as refused:
            attempt()
        assert refused.value.code == "42501", name

    assert row_count(django_supabase, mirrored_seq) == [{"seq": mirrored_seq, "source": "rls"}]
    assert row_count(django_supabase, mirrored_seq + 1000) == []


def test_a_minted_user_token_cannot_call_the_service_only_digest_rpc(
    django_supabase, mirrored_seq, user
):
    client = user_client(django_supabase, user_access_token_mint(user_id=user.pk))
    with pytest.raises(APIError) as refused:
        client.rpc(
            "monitoring_events_chunk_digests", {"from_seq": 0, "to_seq": mirrored_seq + 1}
        ).execute()
    assert refused.value.code == "42501"


def test_an_expired_user_token_is_refused_401(django_supabase, mirrored_seq, user):
    expired = user_access_token_mint(user_id=user.pk, expires_in=-10)
    claims = jwt.decode(
        expired, es256_signing_key(django_supabase).public_key, algorithms=["ES256"],
        audience="authenticated", options={"verify_exp": False},
    )  # fmt: skip
    assert claims["exp"] < time.time()
    assert (claims["role"], claims["sub"]) == ("authenticated", str(user.pk))

    client = user_client(django_supabase, expired)
    with pytest.raises(APIError) as refused:
        client.table(TABLE).select("seq").limit(1).execute()
    assert refused.value.code == "PGRST303"  # JWT expired

    raw = httpx.get(
        f"{django_supabase.url}/rest/v1/{TABLE}?select=seq&limit=1",
        headers={"apikey": django_supabase.publishable_key, "Authorization": f"Bearer {expired}"},
    )
    assert raw.status_code == 401


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_a_token_signed_with_another_key_is_refused_401(django_supabase, user, alg):
    if alg == "ES256":  # our kid, someone else's key
        other = signing_key_generate("ES256", kid=es256_signing_key(django_supabase).kid)
        forged = jwt.encode(
            {"role": "service_role", "sub": str(user.pk), "exp": int(time.time()) + 600},
            other.private_key, algorithm="ES256", headers={"kid": other.kid},
        )  # fmt: skip
    else:
        forged = jwt.encode(
            {"role": "service_role", "sub": str(user.pk), "exp": int(time.time()) + 600},
            "not-the-secret-" * 4,
            algorithm="HS256",
        )
    raw = httpx.get(
        f"{django_supabase.url}/rest/v1/{TABLE}?select=seq&limit=1",
        headers={"apikey": django_supabase.publishable_key, "Authorization": f"Bearer {forged}"},
    )
    assert raw.status_code == 401


def test_the_minted_token_names_the_key_the_project_publishes(django_supabase, user):
    token = user_access_token_mint(user_id=user.pk)
    jwks = httpx.get(f"{django_supabase.url}/auth/v1/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(token)
    published = {key["kid"]: key["alg"] for key in jwks["keys"]}
    assert published[header["kid"]] == header["alg"] == "ES256"
