"""Inserts and upserts through the official client, as PostgREST answers them."""

from __future__ import annotations

import pytest
from postgrest.exceptions import APIError

from tests.supabase_local.conftest import event_row


def _stored(supabase_local, seqs):
    return supabase_local.sql(
        "SELECT seq, event_type, payload FROM public.monitoring_events"
        " WHERE seq = ANY(%s) ORDER BY seq",
        list(seqs),
    )


def test_insert_one_object_returns_the_stored_row(service_client, supabase_local, seq_block):
    (seq,) = seq_block(1)

    response = service_client.table("monitoring_events").insert(event_row(seq)).execute()

    assert len(response.data) == 1
    row = response.data[0]
    assert row["seq"] == seq and isinstance(row["seq"], int)
    assert row["payload"] == {"n": seq, "tags": ["a", "b"], "nested": {"ok": seq % 2 == 0}}
    assert row["occurred_at"].endswith("+00:00")
    assert row["published_at"] is not None  # the column default ran
    assert _stored(supabase_local, [seq])[0]["event_type"] == event_row(seq)["event_type"]


def test_insert_array_of_rows_in_one_request(service_client, supabase_local, seq_block):
    seqs = seq_block(50)

    response = (
        service_client.table("monitoring_events")
        .insert([event_row(seq) for seq in seqs], count="exact")
        .execute()
    )

    assert [row["seq"] for row in response.data] == seqs
    assert response.count == 50
    assert len(_stored(supabase_local, seqs)) == 50


def test_insert_minimal_returns_no_rows(service_client, supabase_local, seq_block):
    (seq,) = seq_block(1)

    response = (
        service_client.table("monitoring_events")
        .insert(event_row(seq), returning="minimal")
        .execute()
    )

    assert response.data == []
    assert len(_stored(supabase_local, [seq])) == 1


def test_duplicate_seq_is_409_23505(service_client, seq_block):
    (seq,) = seq_block(1)
    service_client.table("monitoring_events").insert(event_row(seq)).execute()

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(event_row(seq)).execute()

    assert raised.value.code == "23505"
    assert "duplicate key" in raised.value.message
    assert f"({seq})" in raised.value.details


def test_failed_batch_inserts_nothing(service_client, supabase_local, seq_block):
    first, second = seq_block(2)
    service_client.table("monitoring_events").insert(event_row(second)).execute()

    with pytest.raises(APIError):
        service_client.table("monitoring_events").insert(
            [event_row(first), event_row(second)]
        ).execute()

    assert [row["seq"] for row in _stored(supabase_local, [first, second])] == [second]


def test_upsert_merge_duplicates_updates_existing_rows(service_client, supabase_local, seq_block):
    first, second = seq_block(2)
    service_client.table("monitoring_events").insert(event_row(first)).execute()

    response = (
        service_client.table("monitoring_events")
        .upsert(
            [event_row(first, event_type="changed"), event_row(second, event_type="new")],
            on_conflict="seq",
        )
        .execute()
    )

    assert sorted((r["seq"], r["event_type"]) for r in response.data) == [
        (first, "changed"),
        (second, "new"),
    ]
    assert [r["event_type"] for r in _stored(supabase_local, [first, second])] == [
        "changed",
        "new",
    ]


def test_upsert_ignore_duplicates_keeps_existing_rows(service_client, supabase_local, seq_block):
    first, second = seq_block(2)
    service_client.table("monitoring_events").insert(event_row(first)).execute()

    response = (
        service_client.table("monitoring_events")
        .upsert(
            [event_row(first, event_type="changed"), event_row(second, event_type="new")],
            on_conflict="seq",
            ignore_duplicates=True,
        )
        .execute()
    )

    # Only the row actually inserted comes back, as with PostgREST's DO NOTHING.
    assert [(r["seq"], r["event_type"]) for r in response.data] == [(second, "new")]
    assert [r["event_type"] for r in _stored(supabase_local, [first, second])] == [
        event_row(first)["event_type"],
        "new",
    ]


def test_upsert_without_on_conflict_uses_the_primary_key(service_client, seq_block):
    (seq,) = seq_block(1)
    service_client.table("monitoring_events").insert(event_row(seq)).execute()

    response = (
        service_client.table("monitoring_events")
        .upsert(event_row(seq, source="again"), returning="minimal")
        .execute()
    )

    assert response.data == []


def test_missing_default_fills_absent_keys_with_column_defaults(
    service_client, supabase_local, seq_block
):
    first, second = seq_block(2)
    without_payload = event_row(second)
    del without_payload["payload"]
    # Rows of one request may differ only when ``columns`` names the union (the client
    # sends it for lists); with missing=default an absent key takes the column default.
    response = (
        service_client.table("monitoring_events")
        .insert([event_row(first), without_payload], default_to_null=False)
        .execute()
    )

    assert [r["payload"] for r in response.data][1] == {}


def test_absent_key_without_missing_default_is_null_and_violates_not_null(
    service_client, seq_block
):
    first, second = seq_block(2)
    without_payload = event_row(second)
    del without_payload["payload"]

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(
            [event_row(first), without_payload]
        ).execute()

    assert raised.value.code == "23502"
    assert "payload" in raised.value.message


def test_unknown_column_in_body_is_pgrst204(service_client, seq_block):
    (seq,) = seq_block(1)

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(event_row(seq, no_such_column=1)).execute()

    assert raised.value.code == "PGRST204"
    assert "no_such_column" in raised.value.message


def test_bad_literal_is_22p02(service_client, seq_block):
    (seq,) = seq_block(1)

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(
            event_row(seq, occurred_at="not a time")
        ).execute()

    assert raised.value.code == "22007" or raised.value.code == "22P02"


def test_non_numeric_seq_is_22p02(service_client, seq_block):
    (seq,) = seq_block(1)

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert({**event_row(seq), "seq": "abc"}).execute()

    assert raised.value.code == "22P02"


def test_check_constraint_rejects_an_unknown_criticality(service_client, seq_block):
    (seq,) = seq_block(1)

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(
            event_row(seq, criticality="urgent")
        ).execute()

    assert raised.value.code == "23514"


def test_invalid_json_body_is_pgrst102(supabase_local):
    import httpx

    response = httpx.post(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        content=b'{"seq": 1,',
        headers={
            "apikey": supabase_local.service_role_key,
            "Authorization": f"Bearer {supabase_local.service_role_key}",
            "Content-Type": "application/json",
        },
    )

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST102"
    assert set(response.json()) == {"code", "message", "details", "hint"}


def test_headers_only_sets_location(supabase_local, seq_block):
    import httpx

    (seq,) = seq_block(1)
    response = httpx.post(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        json=event_row(seq),
        headers={
            "apikey": supabase_local.service_role_key,
            "Prefer": "return=headers-only",
        },
    )

    assert response.status_code == 201
    assert response.headers["location"] == f"/monitoring_events?seq=eq.{seq}"
    assert response.content == b""


@pytest.mark.parametrize(
    "body",
    [b'[{"seq": 1,', b"[1, 2]", b'"text"', b"", b'[{"seq": 1}] trailing'],
    ids=["truncated", "not-objects", "scalar", "empty", "trailing"],
)
def test_invalid_json_with_columns_is_pgrst102(supabase_local, body):
    import httpx

    response = httpx.post(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        params={"columns": "seq,event_type"},
        content=body,
        headers={"apikey": supabase_local.service_role_key, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST102"


def test_insert_returns_only_the_selected_columns(service_client, seq_block):
    (seq,) = seq_block(1)

    response = (
        service_client.table("monitoring_events").insert(event_row(seq)).select("seq,t:event_type")
    ).execute()

    assert response.data == [{"seq": seq, "t": event_row(seq)["event_type"]}]


@pytest.fixture(scope="module")
def identity_table(supabase_local):
    """A table whose key is an identity column, as Supabase's table editor creates them."""
    import uuid

    name = f"conformance_identity_{uuid.uuid4().hex[:8]}"
    supabase_local.sql(
        f"CREATE TABLE public.{name} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " name text NOT NULL, label text NOT NULL DEFAULT 'fresh')"
    )
    supabase_local.sql(f"GRANT ALL ON public.{name} TO service_role")
    yield name
    supabase_local.sql(f"DROP TABLE public.{name}")


def test_missing_default_fills_an_identity_column_from_its_sequence(service_client, identity_table):
    # The client names the union of the keys (columns=id,name,label); the second row has
    # no id, so it takes the identity's next value rather than NULL.
    response = (
        service_client.table(identity_table)
        .insert([{"id": 1000, "name": "a"}, {"name": "b", "label": "kept"}], default_to_null=False)
        .execute()
    )

    first, second = response.data
    assert (first["id"], first["name"], first["label"]) == (1000, "a", "fresh")
    assert (second["name"], second["label"]) == ("b", "kept")
    assert 1 <= second["id"] < 1000


def _post_upsert(supabase_local, rows, resolution):
    import httpx

    return httpx.post(
        f"{supabase_local.url}/rest/v1/monitoring_events",
        params={"on_conflict": "seq"},
        json=rows,
        headers={
            "apikey": supabase_local.service_role_key,
            "Prefer": f"resolution={resolution},return=minimal",
        },
    )


def test_upsert_status_says_whether_a_row_was_inserted(supabase_local, seq_block):
    # PostgREST: 201 when the upsert inserted a row, 200 when it only updated rows.
    first, second = seq_block(2)

    inserted = _post_upsert(supabase_local, [event_row(first)], "merge-duplicates")
    updated = _post_upsert(
        supabase_local, [event_row(first, event_type="changed")], "merge-duplicates"
    )
    mixed = _post_upsert(supabase_local, [event_row(first), event_row(second)], "merge-duplicates")
    ignored = _post_upsert(supabase_local, [event_row(first)], "ignore-duplicates")

    assert [r.status_code for r in (inserted, updated, mixed, ignored)] == [201, 200, 201, 201]
    assert updated.headers["preference-applied"] == "resolution=merge-duplicates, return=minimal"
