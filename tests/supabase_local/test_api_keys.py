"""API keys as a project created today has them: ``sb_publishable_…`` runs as anon (or as the
signed-in user), ``sb_secret_…`` as service_role and never from a browser, and the legacy
JWT keys work beside them until they are disabled. Driven by the official clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
from postgrest.exceptions import APIError
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from supabase import acreate_client

from supabase_local.api_keys import api_key_check, api_key_derive, is_api_key
from tests.fixtures.supabase_local import SupabaseLocal, running_supabase_local
from tests.supabase_local.conftest import event_row, make_client

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0"


@pytest.fixture
def one_row(supabase_local, seq_block):
    (seq,) = seq_block(1)
    supabase_local.sql(
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum) VALUES"
        " (%s, 'keys.probe', 'tests', 'system', now(), now(), '{}', %s)",
        seq,
        f"{seq:064x}",
    )
    return seq


@pytest.fixture(scope="module")
def legacy_off() -> Iterator[SupabaseLocal]:
    """A project whose legacy anon/service_role keys were disabled in the dashboard."""
    with running_supabase_local(legacy_keys=False, faults=False) as server:
        yield server


def _get(server: SupabaseLocal, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}/rest/v1/monitoring_events?limit=1", headers=headers)


# -- the publishable key ---------------------------------------------------------------


def test_the_publishable_key_reads_only_what_rls_gives_anon(supabase_local, one_row):
    client = make_client(supabase_local, supabase_local.publishable_key)

    with pytest.raises(APIError) as read:
        client.table("monitoring_events").select("seq").eq("seq", one_row).execute()

    assert read.value.code == "42501"  # anon holds no grant on the table


def test_a_user_token_beside_the_publishable_key_decides_the_role(supabase_local, one_row):
    token = supabase_local.mint_signed("authenticated", sub=str(uuid.uuid4()))
    client = make_client(supabase_local, supabase_local.publishable_key, access_token=token)

    rows = client.table("monitoring_events").select("seq").eq("seq", one_row).execute()

    assert rows.data == [{"seq": one_row}]


# -- the secret key --------------------------------------------------------------------


def test_the_secret_key_writes(supabase_local, seq_block):
    (seq,) = seq_block(1)
    client = make_client(supabase_local, supabase_local.secret_key)

    client.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()

    assert supabase_local.sql("SELECT seq FROM monitoring_events WHERE seq = %s", seq) == [
        {"seq": seq}
    ]


async def test_the_secret_key_writes_through_the_async_client(supabase_local, seq_block):
    (seq,) = seq_block(1)
    client = await acreate_client(supabase_local.url, supabase_local.secret_key)

    await client.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()

    rows = await asyncio.to_thread(
        supabase_local.sql, "SELECT seq FROM monitoring_events WHERE seq = %s", seq
    )
    assert rows == [{"seq": seq}]


def test_the_secret_key_is_refused_from_a_browser(supabase_local):
    response = _get(
        supabase_local,
        apikey=supabase_local.secret_key,
        Authorization=f"Bearer {supabase_local.secret_key}",
        **{"User-Agent": BROWSER},
    )

    assert response.status_code == 401
    assert response.json()["message"] == "Forbidden use of secret API key in browser"


def test_the_publishable_key_is_fine_from_a_browser(supabase_local):
    token = supabase_local.mint_signed("authenticated", sub=str(uuid.uuid4()))
    response = _get(
        supabase_local,
        apikey=supabase_local.publishable_key,
        Authorization=f"Bearer {token}",
        **{"User-Agent": BROWSER},
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"apikey": "sb_secret_NotAKeyOfThisProjectAtAll_12345678"},
        {"apikey": "sb_publishable_NotAKeyOfThisProject_12345678"},
    ],
    ids=["unknown-secret", "unknown-publishable"],
)
def test_an_unknown_key_is_401_invalid_api_key(supabase_local, headers):
    response = _get(supabase_local, **headers)

    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API key"


def test_a_new_key_in_authorization_must_equal_the_apikey(supabase_local):
    response = _get(
        supabase_local,
        apikey=supabase_local.publishable_key,
        Authorization=f"Bearer {supabase_local.secret_key}",
    )

    assert response.status_code == 401


def test_a_new_key_only_in_authorization_is_no_api_key(supabase_local):
    response = _get(supabase_local, Authorization=f"Bearer {supabase_local.secret_key}")

    assert response.status_code == 401
    assert response.json()["message"] == "No API key found in request"


# -- legacy keys disabled ----------------------------------------------------------------


def test_legacy_off_prints_no_legacy_keys_and_refuses_jwt_api_keys(legacy_off, supabase_local):
    # A legacy key of this project's secret, as it was before the switch was turned off.
    legacy_service = legacy_off.mint("service_role", expires_in=3600)

    response = _get(legacy_off, apikey=legacy_service)

    assert (legacy_off.anon_key, legacy_off.service_role_key) == (None, None)
    assert response.status_code == 401
    assert response.json()["message"] == "Legacy API keys are disabled"


def test_legacy_off_new_keys_still_work(legacy_off, seq_block):
    (seq,) = seq_block(1)
    service = make_client(legacy_off, legacy_off.secret_key)
    user_token = legacy_off.mint_signed("authenticated", sub=str(uuid.uuid4()), alg="RS256")
    user = make_client(legacy_off, legacy_off.publishable_key, access_token=user_token)

    service.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()
    rows = user.table("monitoring_events").select("seq").eq("seq", seq).execute()
    service.table("monitoring_events").delete().eq("seq", seq).execute()

    assert rows.data == [{"seq": seq}]


async def test_legacy_off_realtime_refuses_a_legacy_key_and_takes_a_new_one(legacy_off):
    legacy_anon = legacy_off.mint("anon", expires_in=3600)
    refused = AsyncRealtimeClient(f"{legacy_off.url}/realtime/v1", legacy_anon, max_retries=1)
    with pytest.raises(Exception):  # noqa: B017  (the client raises its own errors)
        await asyncio.wait_for(refused.connect(), 10)

    client = AsyncRealtimeClient(f"{legacy_off.url}/realtime/v1", legacy_off.publishable_key)
    try:
        states: list = []
        channel = client.channel(f"keys-{uuid.uuid4().hex[:8]}")
        await asyncio.wait_for(channel.subscribe(lambda state, _err=None: states.append(state)), 10)
        for _ in range(100):
            if RealtimeSubscribeStates.SUBSCRIBED in states:
                break
            await asyncio.sleep(0.05)
        assert RealtimeSubscribeStates.SUBSCRIBED in states
    finally:
        await asyncio.wait_for(client.close(), 5)


# -- units -------------------------------------------------------------------------------


def test_derived_keys_are_stable_opaque_and_per_kind():
    publishable = api_key_derive(prefix="sb_publishable_", seed="s" * 40)

    assert publishable == api_key_derive(prefix="sb_publishable_", seed="s" * 40)
    assert publishable != api_key_derive(prefix="sb_publishable_", seed="t" * 40)
    assert is_api_key(publishable) and publishable.count(".") == 0  # not a JWT
    assert api_key_check(publishable, prefix="sb_publishable_") == publishable
    with pytest.raises(ValueError):
        api_key_check(publishable, prefix="sb_secret_")
