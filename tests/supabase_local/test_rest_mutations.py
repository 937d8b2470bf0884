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


def _insert_with_prefer(server, seq, prefer):
    return httpx.post(
        f"{server.url}/rest/v1/monitoring_events",
        json=event_row(seq),
        headers={"apikey": server.service_role_key, "Prefer": prefer},
    )


def test_tx_rollback_is_ignored_as_on_a_hosted_project(supabase_local, seq_block):
    # Supabase runs PostgREST with db-tx-end=commit: Prefer: tx=... is not applied.
    (seq,) = seq_block(1)

    response = _insert_with_prefer(supabase_local, seq, "tx=rollback, return=minimal")

    assert response.status_code == 201
    assert response.headers["preference-applied"] == "return=minimal"
    assert supabase_local.sql("SELECT seq FROM public.monitoring_events WHERE seq = %s", seq)


def test_tx_rollback_is_honoured_when_db_tx_end_allows_overrides():
    from tests.fixtures.supabase_local import running_supabase_local

    with running_supabase_local(extra_args=("--db-tx-end", "commit-allow-override")) as server:
        rolled_back = _insert_with_prefer(server, 1, "return=representation, tx=rollback")
        committed = _insert_with_prefer(server, 2, "tx=commit")
        stored = server.sql("SELECT seq FROM public.monitoring_events ORDER BY seq")

    assert rolled_back.status_code == 201
    assert rolled_back.json()[0]["seq"] == 1  # answered as if committed, then rolled back
    assert rolled_back.headers["preference-applied"] == "return=representation, tx=rollback"
    assert committed.headers["preference-applied"] == "tx=commit"
    assert [row["seq"] for row in stored] == [2]


def test_unknown_preference_under_handling_strict_is_pgrst122(supabase_local, three_rows):
    response = httpx.patch(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        params={"seq": f"eq.{three_rows[0]}"},
        json={"event_type": "changed"},
        headers={"apikey": supabase_local.service_role_key,
                 "Prefer": "handling=strict, return=everything"},
    )  # fmt: skip

    assert (response.status_code, response.json()["code"]) == (400, "PGRST122")
    assert response.json()["details"] == "Invalid preferences: return=everything"
    unchanged = event_row(three_rows[0])["event_type"]
    assert _types(supabase_local, three_rows[:1]) == {three_rows[0]: unchanged}
