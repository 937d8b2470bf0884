"""Accept-Profile / Content-Profile: only the exposed schema (public) is served."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.supabase_local.conftest import event_row, make_client


def test_public_profile_works(supabase_local, seq_block):
    (seq,) = seq_block(1)
    client = make_client(supabase_local, supabase_local.service_role_key, schema="public")

    client.table("monitoring_events").insert(event_row(seq), returning="minimal").execute()
    rows = client.table("monitoring_events").select("seq").eq("seq", seq).execute()

    assert rows.data == [{"seq": seq}]


@pytest.mark.parametrize("operation", ["select", "insert", "rpc"])
def test_unknown_profile_is_pgrst106(supabase_local, operation):
    client = make_client(supabase_local, supabase_local.service_role_key, schema="auth")

    with pytest.raises(APIError) as raised:
        if operation == "select":
            client.table("monitoring_events").select("seq").execute()
        elif operation == "insert":
            client.table("monitoring_events").insert(event_row(1)).execute()
        else:
            client.rpc("uid", {}).execute()

    assert raised.value.code == "PGRST106"
    assert raised.value.message == "Invalid schema: auth"
    assert raised.value.hint == "Only the following schemas are exposed: public"


def test_profile_error_status_is_406(supabase_local):
    response = httpx.get(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        headers={"apikey": supabase_local.service_role_key, "Accept-Profile": "private"},
    )

    assert response.status_code == 406
