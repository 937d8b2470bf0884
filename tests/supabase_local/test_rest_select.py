"""Reads: select lists, every filter, logic trees, ordering, paging, counts, single rows."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError


@pytest.fixture
def items(service_client, items_table):
    return lambda: service_client.table(items_table)


def ids(response):
    return [row["id"] for row in response.data]


@pytest.mark.parametrize(
    ("apply", "expected"),
    [
        (lambda q: q.eq("name", "alpha"), [1]),
        (lambda q: q.neq("name", "alpha"), [2, 3, 4, 5]),
        (lambda q: q.gt("score", 10), [3, 4]),
        (lambda q: q.gte("score", 20), [3, 4]),
        (lambda q: q.lt("score", 30), [1, 4]),
        (lambda q: q.lte("score", 10), [1]),
        (lambda q: q.like("name", "%a"), [1, 2, 3, 4]),
        (lambda q: q.like("name", "*lt*"), [4]),
        (lambda q: q.ilike("name", "g%"), [3]),
        (lambda q: q.is_("score", None), [2, 5]),
        (lambda q: q.is_("score", "not_null"), [1, 3, 4]),
        (lambda q: q.in_("id", [1, 3, 99]), [1, 3]),
        (lambda q: q.in_("name", ["beta", "a,b"]), [2]),
        (lambda q: q.not_.in_("id", [1, 2]), [3, 4, 5]),
        (lambda q: q.not_.is_("score", None), [1, 3, 4]),
        (lambda q: q.not_.eq("name", "alpha").not_.eq("name", "beta"), [3, 4, 5]),
        (lambda q: q.gte("id", 2).lte("id", 4), [2, 3, 4]),  # repeated columns ANDed
        (lambda q: q.or_("score.gte.30,name.eq.beta"), [2, 3]),
        (lambda q: q.or_("id.eq.1,and(score.gt.10,score.lt.30)"), [1, 4]),
        (lambda q: q.not_.or_("id.eq.1,id.eq.2"), [3, 4, 5]),
        (lambda q: q.contains("tags", ["red"]), [1, 4]),
        (lambda q: q.contained_by("tags", ["red", "blue"]), [1, 2, 3, 4]),
        (lambda q: q.contains("meta", {"k": 3}), [3]),
        (lambda q: q.filter("name", "imatch", "^(ALPHA|beta)$"), [1, 2]),
    ],
)
def test_filters(items, apply, expected):
    response = apply(items().select("id")).order("id").execute()

    assert ids(response) == expected


def test_select_lists_columns_and_renames(items):
    response = items().select("id,title:name").eq("id", 1).execute()

    assert response.data == [{"id": 1, "title": "alpha"}]


def test_select_star_returns_every_column_with_json_types(items):
    (row,) = items().select("*").eq("id", 1).execute().data

    assert row["tags"] == ["red", "blue"]
    assert row["meta"] == {"k": 1}
    assert row["score"] == 10
    assert set(row) == {"id", "name", "score", "tags", "meta", "created_at", "label"}


def test_order_by_several_columns_and_nulls(items):
    nulls_first = items().select("id").order("score", desc=True, nullsfirst=True).order("id")
    nulls_last = items().select("id").order("score", nullsfirst=False).order("id", desc=True)

    assert ids(nulls_first.execute()) == [2, 5, 3, 4, 1]
    assert ids(nulls_last.execute()) == [1, 4, 3, 5, 2]


def test_limit_and_offset(items):
    assert ids(items().select("id").order("id").limit(2).offset(1).execute()) == [2, 3]


def test_range_with_exact_count(items):
    response = items().select("id", count="exact").order("id").range(1, 3).execute()

    assert ids(response) == [2, 3, 4]
    assert response.count == 5


def test_head_counts_without_rows(items):
    response = items().select("*", count="exact", head=True).gt("id", 1).execute()

    assert response.count == 4
    assert response.data == []


def test_single_returns_one_object(items):
    response = items().select("id,name").eq("id", 3).single().execute()

    assert response.data == {"id": 3, "name": "Gamma"}


@pytest.mark.parametrize(("filter_id", "row_count"), [(99, 0), (None, 5)])
def test_single_without_exactly_one_row_is_pgrst116(items, filter_id, row_count):
    query = items().select("id")
    if filter_id is not None:
        query = query.eq("id", filter_id)

    with pytest.raises(APIError) as raised:
        query.single().execute()

    assert raised.value.code == "PGRST116"
    assert raised.value.details == f"The result contains {row_count} rows"


def test_maybe_single(items):
    assert items().select("id").eq("id", 99).maybe_single().execute() is None
    assert items().select("id").eq("id", 4).maybe_single().execute().data == {"id": 4}


def test_bad_operator_is_pgrst100(items):
    with pytest.raises(APIError) as raised:
        items().select("id").filter("id", "between", "1").execute()

    assert raised.value.code == "PGRST100"


def test_unknown_filter_column_is_42703(items, items_table):
    with pytest.raises(APIError) as raised:
        items().select("id").eq("nope", 1).execute()

    assert raised.value.code == "42703"
    assert raised.value.message == f"column {items_table}.nope does not exist"


def test_unknown_table_is_pgrst205(service_client):
    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_eventz").select("*").execute()

    assert raised.value.code == "PGRST205"
    assert raised.value.message == (
        "Could not find the table 'public.monitoring_eventz' in the schema cache"
    )
    assert raised.value.hint == "Perhaps you meant the table 'public.monitoring_events'"


def test_bad_filter_value_for_the_column_type_is_22p02(items):
    with pytest.raises(APIError) as raised:
        items().select("id").eq("id", "one").execute()

    assert raised.value.code == "22P02"


def test_filters_on_timestamptz_and_bigint_columns(service_client, seq_block):
    from tests.supabase_local.conftest import event_row

    seqs = seq_block(5)
    rows = [event_row(seq) for seq in seqs]
    service_client.table("monitoring_events").insert(rows, returning="minimal").execute()

    response = (
        service_client.table("monitoring_events")
        .select("seq")
        .gte("seq", seqs[0])
        .lte("seq", seqs[-1])
        .gt("occurred_at", rows[1]["occurred_at"])
        .order("seq", desc=True)
        .execute()
    )

    assert [r["seq"] for r in response.data] == list(reversed(seqs[2:]))


# --- raw protocol details the official client does not expose ------------------------


def _get(supabase_local, path, **headers):
    key = supabase_local.service_role_key
    return httpx.get(f"{supabase_local.url}/rest/v1/{path}", headers={"apikey": key, **headers})


def test_content_range_on_every_answer(supabase_local, items_table):
    plain = _get(supabase_local, f"{items_table}?select=id&order=id&limit=2")
    counted = _get(supabase_local, f"{items_table}?select=id&order=id", Prefer="count=exact")
    empty = _get(supabase_local, f"{items_table}?id=eq.99", Prefer="count=exact")

    assert (plain.status_code, plain.headers["content-range"]) == (200, "0-1/*")
    assert (counted.status_code, counted.headers["content-range"]) == (200, "0-4/5")
    assert (empty.status_code, empty.headers["content-range"]) == (200, "*/0")


def test_partial_content_is_206_and_beyond_the_end_is_416(supabase_local, items_table):
    partial = _get(supabase_local, f"{items_table}?select=id&order=id",
                   Prefer="count=exact", Range="1-2")  # fmt: skip
    beyond = _get(supabase_local, f"{items_table}?select=id&offset=9", Prefer="count=exact")

    assert (partial.status_code, partial.headers["content-range"]) == (206, "1-2/5")
    assert [row["id"] for row in partial.json()] == [2, 3]
    assert beyond.status_code == 416
    assert beyond.json()["code"] == "PGRST103"
    assert beyond.headers["content-range"] == "*/5"


def test_unsupported_accept_is_406(supabase_local, items_table):
    response = _get(supabase_local, f"{items_table}?select=id", Accept="application/xml")

    assert response.status_code == 406
    assert response.json()["code"] == "PGRST107"


def test_embedding_is_refused_clearly(supabase_local, items_table):
    response = _get(supabase_local, f"{items_table}?select=id,other(id)")

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST200"


def test_json_paths_in_select_filter_and_order(items):
    response = (
        items()
        .select("id,k:meta->k,kt:meta->>k")
        .gte("meta->>k", "3")
        .order("meta->k", desc=True)
        .execute()
    )

    assert response.data == [{"id": 4, "k": 4, "kt": "4"}, {"id": 3, "k": 3, "kt": "3"}]


def test_json_path_equality_on_jsonb_and_array_positions(service_client, seq_block):
    from tests.supabase_local.conftest import event_row

    seqs = seq_block(3)
    service_client.table("monitoring_events").insert(
        [event_row(seq) for seq in seqs], returning="minimal"
    ).execute()

    response = (
        service_client.table("monitoring_events")
        .select("seq,payload->nested->>ok,first_tag:payload->tags->>0")
        .in_("seq", seqs)
        .eq("payload->n", seqs[1])
        .execute()
    )

    assert response.data == [
        {"seq": seqs[1], "ok": str(seqs[1] % 2 == 0).lower(), "first_tag": "a"}
    ]


def test_a_table_changed_under_a_cached_statement_still_answers(supabase_local, service_client):
    import uuid as _uuid

    name = f"conformance_altered_{_uuid.uuid4().hex[:8]}"
    supabase_local.sql(f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, a text)")
    supabase_local.sql(f"GRANT ALL ON public.{name} TO service_role")
    supabase_local.sql(f"INSERT INTO public.{name} VALUES (1, 'x')")
    try:
        for _ in range(3):  # every pooled connection prepares the statement
            assert service_client.table(name).select("*").execute().data == [{"id": 1, "a": "x"}]
        supabase_local.sql(f"ALTER TABLE public.{name} ALTER COLUMN a TYPE varchar(10)")
        supabase_local.sql("NOTIFY pgrst, 'reload schema'")

        for _ in range(3):
            assert service_client.table(name).select("*").execute().data == [{"id": 1, "a": "x"}]
    finally:
        supabase_local.sql(f"DROP TABLE public.{name}")


def test_or_keeps_an_array_literal_whole(items):
    # PostgREST reads {...} in a logic tree as one value: its commas do not split.
    response = items().select("id").or_("id.in.(4,5),tags.cs.{red,blue}").order("id").execute()

    assert ids(response) == [1, 4, 5]


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ("select=id&limit=²", {}, 400, "PGRST100"),  # a digit to str.isdigit, not to PostgREST
        ("select=id&offset=²", {}, 400, "PGRST100"),
        ("select=id&limit=٣", {}, 400, "PGRST100"),  # an Arabic-Indic 3
        ("select=id&limit=" + "9" * 5000, {}, 400, "22003"),  # PostgreSQL: bigint out of range
        ("select=id&offset=" + "9" * 30, {}, 400, "22003"),
        ("select=id", {"Range": "0-" + "9" * 5000}, 400, "22003"),
        ("select=id", {"Range": "1" * 3000 + "-"}, 400, "22003"),
        ("select=id&meta->>-" + "9" * 40 + "=eq.1", {}, 400, "22003"),
        ("select=id&or=(" + "or(" * 499 + "id.eq.1" + ")" * 500, {}, 400, "PGRST100"),
    ],
    ids=["limit-superscript", "offset-superscript", "limit-arabic-indic", "limit-5000-digits",
         "offset-30-digits", "range-end-5000-digits", "range-start-3000-digits",
         "json-index-40-digits", "or-nested-500-deep"],
)  # fmt: skip
def test_numbers_and_nesting_beyond_reason_are_clear_400s(
    supabase_local, items_table, query, headers, status, code
):
    response = _get(supabase_local, f"{items_table}?{query}", **headers)

    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_json_key_of_non_ascii_digits_is_a_key_not_an_index(supabase_local, items_table):
    # PostgREST's array index is ASCII digits only; "²" is an object key like "k".
    response = _get(supabase_local, f"{items_table}?select=id,v:meta->²&id=eq.1")

    assert (response.status_code, response.json()) == (200, [{"id": 1, "v": None}])
