"""Update and delete with filters; unfiltered ones are refused like Supabase's safeupdate."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.supabase_local.conftest import event_row


@pytest.fixture
def three_rows(service_client, seq_block):
    seqs = seq_block(3)
    service_client.table("monitoring_events").insert(
        [event_row(seq) for seq in seqs], returning="minimal"
    ).execute()
    return seqs


def _types(supabase_local, seqs):
    rows = supabase_local.sql(
        "SELECT seq, event_type FROM public.monitoring_events WHERE seq = ANY(%s) ORDER BY seq",
        list(seqs),
    )
    return {row["seq"]: row["event_type"] for row in rows}


def test_update_with_filter_changes_only_matching_rows(service_client, supabase_local, three_rows):
    first, second, third = three_rows

    response = (
        service_client.table("monitoring_events")
        .update({"event_type": "patched", "payload": {"patched": True}})
        .gte("seq", second)
        .lte("seq", third)
        .execute()
    )

    assert sorted(row["seq"] for row in response.data) == [second, third]
    assert all(row["payload"] == {"patched": True} for row in response.data)
    assert _types(supabase_local, three_rows) == {
        first: event_row(first)["event_type"],
        second: "patched",
        third: "patched",
    }


def test_update_minimal_returns_nothing(service_client, supabase_local, three_rows):
    response = (
        service_client.table("monitoring_events")
        .update({"source": "minimal"}, returning="minimal")
        .eq("seq", three_rows[0])
        .execute()
    )

    assert response.data == []
    assert supabase_local.sql(
        "SELECT source FROM public.monitoring_events WHERE seq = %s", three_rows[0]
    ) == [{"source": "minimal"}]


def test_update_unknown_column_is_pgrst204(service_client, three_rows):
    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").update({"nope": 1}).eq(
            "seq", three_rows[0]
        ).execute()

    assert raised.value.code == "PGRST204"


def test_delete_with_filter_returns_deleted_rows(service_client, supabase_local, three_rows):
    response = (
        service_client.table("monitoring_events")
        .delete(count="exact")
        .in_("seq", three_rows[:2])
        .execute()
    )

    assert sorted(row["seq"] for row in response.data) == three_rows[:2]
    assert response.count == 2
    assert list(_types(supabase_local, three_rows)) == [three_rows[2]]


@pytest.mark.parametrize("verb", ["delete", "update"])
def test_unfiltered_update_or_delete_is_refused(service_client, supabase_local, three_rows, verb):
    table = service_client.table("monitoring_events")
    query = table.delete() if verb == "delete" else table.update({"source": "everything"})

    with pytest.raises(APIError) as raised:
        query.execute()

    assert raised.value.code == "21000"
    assert raised.value.message == f"{verb.upper()} requires a WHERE clause"
    assert len(_types(supabase_local, three_rows)) == 3


def test_single_object_mutation_of_several_rows_is_rolled_back(supabase_local, three_rows):
    response = httpx.patch(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        params={"seq": f"in.({','.join(map(str, three_rows))})"},
        json={"event_type": "should-roll-back"},
        headers={
            "apikey": supabase_local.service_role_key,
            "Accept": "application/vnd.pgrst.object+json",
            "Prefer": "return=representation",
        },
    )

    assert response.status_code == 406
    assert response.json()["code"] == "PGRST116"
    assert "should-roll-back" not in _types(supabase_local, three_rows).values()


def test_max_affected_rolls_back_a_larger_change(service_client, supabase_local, three_rows):
    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").delete().in_("seq", three_rows).max_affected(
            2
        ).execute()

    assert raised.value.code == "PGRST124"
    assert len(_types(supabase_local, three_rows)) == 3

    service_client.table("monitoring_events").delete().in_("seq", three_rows[:2]).max_affected(
        2
    ).execute()
    assert list(_types(supabase_local, three_rows)) == [three_rows[2]]
