"""POST/GET /rest/v1/rpc/<function>: arguments, result shapes, errors, privileges."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.supabase_local.conftest import event_row


@pytest.fixture(scope="module")
def helper_functions(supabase_local):
    """Functions of each result shape, created behind the server's back."""
    supabase_local.sql(
        "CREATE FUNCTION public.sl_add(a integer, b integer DEFAULT 1) RETURNS integer"
        " LANGUAGE sql IMMUTABLE AS 'SELECT a + b'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_series(n integer) RETURNS SETOF integer"
        " LANGUAGE sql IMMUTABLE AS 'SELECT generate_series(1, n)'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_pairs(n integer)"
        " RETURNS TABLE (k integer, square integer, label text)"
        " LANGUAGE sql IMMUTABLE AS"
        " 'SELECT i, i * i, ''n'' || i FROM generate_series(1, n) AS i'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_echo(doc jsonb, tags text[]) RETURNS jsonb"
        " LANGUAGE sql IMMUTABLE AS 'SELECT jsonb_build_object(''doc'', doc, ''tags'', tags)'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_noop() RETURNS void LANGUAGE sql AS 'SELECT NULL'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_fail() RETURNS integer LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'told to fail' USING HINT = 'it always does'; END$$"
    )
    supabase_local.sql("NOTIFY pgrst, 'reload schema'")
    yield
    for signature in (
        "sl_add(integer, integer)",
        "sl_series(integer)",
        "sl_pairs(integer)",
        "sl_echo(jsonb, text[])",
        "sl_noop()",
        "sl_fail()",
    ):
        supabase_local.sql(f"DROP FUNCTION public.{signature}")


@pytest.mark.usefixtures("helper_functions")
class TestShapes:
    def test_scalar(self, service_client):
        assert service_client.rpc("sl_add", {"a": 2, "b": 3}).execute().data == 5

    def test_default_argument(self, service_client):
        assert service_client.rpc("sl_add", {"a": 41}).execute().data == 42

    def test_set_of_scalars(self, service_client):
        assert service_client.rpc("sl_series", {"n": 3}).execute().data == [1, 2, 3]

    def test_table_with_filters_order_and_limit(self, service_client):
        response = (
            service_client.rpc("sl_pairs", {"n": 6})
            .select("k,label")
            .gt("square", 4)
            .order("k", desc=True)
            .limit(2)
            .execute()
        )
        assert response.data == [{"k": 6, "label": "n6"}, {"k": 5, "label": "n5"}]

    def test_json_and_array_arguments(self, service_client):
        response = service_client.rpc(
            "sl_echo", {"doc": {"a": [1, {"b": None}]}, "tags": ["x", "y"]}
        ).execute()
        assert response.data == {"doc": {"a": [1, {"b": None}]}, "tags": ["x", "y"]}

    def test_get_with_query_arguments(self, service_client):
        response = service_client.rpc("sl_add", {"a": 1, "b": 2}, get=True).execute()
        assert response.data == 3

    def test_void(self, service_client):
        assert service_client.rpc("sl_noop", {}).execute().data == []

    def test_raise_exception_is_400_p0001(self, service_client):
        with pytest.raises(APIError) as raised:
            service_client.rpc("sl_fail", {}).execute()
        assert (raised.value.code, raised.value.message) == ("P0001", "told to fail")
        assert raised.value.hint == "it always does"

    def test_unknown_function_is_pgrst202(self, service_client):
        with pytest.raises(APIError) as raised:
            service_client.rpc("sl_nope", {"x": 1}).execute()
        assert raised.value.code == "PGRST202"
        assert raised.value.message == (
            "Could not find the function public.sl_nope(x) in the schema cache"
        )

    def test_wrong_argument_names_are_pgrst202(self, service_client):
        with pytest.raises(APIError) as raised:
            service_client.rpc("sl_add", {"a": 1, "c": 2}).execute()
        assert raised.value.code == "PGRST202"

    def test_bad_argument_value_is_22p02(self, service_client):
        with pytest.raises(APIError) as raised:
            service_client.rpc("sl_add", {"a": "one"}).execute()
        assert raised.value.code == "22P02"


def test_chunk_digests_rpc_counts_rows_per_chunk(service_client, seq_block):
    seqs = seq_block(25)
    base = seqs[0]
    service_client.table("monitoring_events").insert(
        [event_row(seq) for seq in seqs if seq != base + 12], returning="minimal"
    ).execute()

    response = service_client.rpc(
        "monitoring_events_chunk_digests",
        {"from_seq": base, "to_seq": base + 25, "chunk_size": 10},
    ).execute()

    chunks = [(c["chunk_start"], c["chunk_end"], c["row_count"]) for c in response.data]
    assert chunks == [(base, base + 10, 10), (base + 10, base + 20, 9), (base + 20, base + 25, 5)]
    assert all(c["digest"].isdigit() and int(c["digest"]) < 2**64 for c in response.data)
    assert len({c["digest"] for c in response.data}) == 3


def test_chunk_digest_changes_when_any_field_changes(service_client, supabase_local, seq_block):
    seqs = seq_block(3)
    service_client.table("monitoring_events").insert(
        [event_row(seq) for seq in seqs], returning="minimal"
    ).execute()
    args = {"from_seq": seqs[0], "to_seq": seqs[-1] + 1, "chunk_size": 100}

    def digest():
        return service_client.rpc("monitoring_events_chunk_digests", args).execute().data

    before = digest()
    changes = [
        ("event_type", "'x'"),
        ("source", "'x'"),
        ("criticality", "'debug'") if event_row(seqs[1])["criticality"] != "debug" else
        ("criticality", "'system'"),
        ("occurred_at", "occurred_at + interval '1 microsecond'"),
        ("received_at", "received_at + interval '1 microsecond'"),
        ("payload", "payload || '{\"extra\": 1}'"),
        ("checksum", f"'{'f' * 64}'"),
    ]  # fmt: skip
    for column, expression in changes:
        supabase_local.sql(
            f"UPDATE public.monitoring_events SET {column} = {expression} WHERE seq = %s",
            seqs[1],
        )
        after = digest()
        assert after[0]["row_count"] == before[0]["row_count"] == 3
        assert after[0]["digest"] != before[0]["digest"], column
        before = after
    # published_at is delivery metadata, not content: it does not change the digest.
    supabase_local.sql(
        "UPDATE public.monitoring_events SET published_at = now() - interval '1 day'"
        " WHERE seq = %s",
        seqs[1],
    )
    assert digest() == before


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_chunk_digests_are_for_service_role_only(supabase_local, role):
    token = supabase_local.mint(role)
    response = httpx.post(
        f"{supabase_local.url}/rest/v1/rpc/monitoring_events_chunk_digests",
        json={"from_seq": 0, "to_seq": 10},
        headers={"apikey": supabase_local.anon_key, "Authorization": f"Bearer {token}"},
    )

    assert response.status_code == (401 if role == "anon" else 403)
    assert response.json()["code"] == "42501"


def test_rpc_get_runs_read_only(supabase_local, seq_block):
    (seq,) = seq_block(1)
    supabase_local.sql(
        "CREATE OR REPLACE FUNCTION public.sl_writes(s bigint) RETURNS bigint LANGUAGE sql AS"
        " $$DELETE FROM public.monitoring_events WHERE seq = s RETURNING seq$$"
    )
    try:
        response = httpx.get(
            f"{supabase_local.url}/rest/v1/rpc/sl_writes",
            params={"s": seq},
            headers={"apikey": supabase_local.service_role_key},
        )
        assert response.status_code == 405
        assert response.json()["code"] == "25006"
    finally:
        supabase_local.sql("DROP FUNCTION public.sl_writes(bigint)")


@pytest.mark.usefixtures("helper_functions")
def test_rpc_table_result_pages_with_count(supabase_local):
    response = httpx.post(
        f"{supabase_local.url}/rest/v1/rpc/sl_pairs",
        params={"select": "k", "order": "k", "offset": "2", "limit": "3"},
        json={"n": 10},
        headers={"apikey": supabase_local.service_role_key, "Prefer": "count=exact"},
    )

    assert response.status_code == 206
    assert response.json() == [{"k": 3}, {"k": 4}, {"k": 5}]
    assert response.headers["content-range"] == "2-4/10"


@pytest.mark.usefixtures("helper_functions")
class TestCounts:
    def test_exact_count_of_a_scalar_is_one(self, service_client):
        response = service_client.rpc("sl_add", {"a": 1}, count="exact").execute()

        assert (response.data, response.count) == (2, 1)

    def test_exact_count_of_a_set_of_scalars(self, service_client):
        response = service_client.rpc("sl_series", {"n": 4}, count="exact").execute()

        assert (response.data, response.count) == ([1, 2, 3, 4], 4)

    def test_planned_count_is_not_applied_to_a_call(self, supabase_local):
        # PostgREST explains only table reads; a call answers without a total.
        response = httpx.head(
            f"{supabase_local.url}/rest/v1/rpc/sl_pairs",
            params={"n": 3},
            headers={"apikey": supabase_local.service_role_key, "Prefer": "count=planned"},
        )

        assert (response.status_code, response.headers["content-range"]) == (200, "0-2/*")


def test_planned_count_is_the_planner_estimate(supabase_local, service_client):
    import uuid

    name = f"conformance_planned_{uuid.uuid4().hex[:8]}"
    supabase_local.sql(
        f"CREATE TABLE public.{name} (id int PRIMARY KEY) WITH (autovacuum_enabled = false)"
    )
    supabase_local.sql(f"GRANT ALL ON public.{name} TO service_role")
    supabase_local.sql(f"INSERT INTO public.{name} SELECT generate_series(1, 5)")
    try:
        (plan,) = supabase_local.sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM public.{name}")
        estimate = plan["QUERY PLAN"][0]["Plan"]["Plan Rows"]
        counted = service_client.table(name).select("*", count="planned", head=True).execute()
        head = httpx.head(
            f"{supabase_local.url}/rest/v1/{name}",
            headers={"apikey": supabase_local.service_role_key, "Prefer": "count=planned"},
        )
    finally:
        supabase_local.sql(f"DROP TABLE public.{name}")

    assert estimate > 5  # never analysed: the planner guesses from the table's size
    assert counted.count == estimate
    assert (head.status_code, head.headers["content-range"]) == (206, f"0-4/{estimate}")


@pytest.fixture(scope="module")
def body_functions(supabase_local):
    """Functions with one unnamed parameter: PostgREST passes them the whole body."""
    supabase_local.sql(
        "CREATE FUNCTION public.sl_body_json(json) RETURNS json LANGUAGE sql AS 'SELECT $1'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_body_jsonb(jsonb) RETURNS jsonb LANGUAGE sql"
        " AS $$SELECT $1 || '{\"seen\": true}'$$"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_body_text(text) RETURNS text LANGUAGE sql AS 'SELECT upper($1)'"
    )
    supabase_local.sql(
        "CREATE FUNCTION public.sl_request() RETURNS jsonb LANGUAGE sql STABLE AS $$SELECT"
        " jsonb_build_object('headers', current_setting('request.headers', true)::jsonb,"
        " 'cookies', current_setting('request.cookies', true)::jsonb)$$"
    )
    supabase_local.sql("NOTIFY pgrst, 'reload schema'")
    yield
    for signature in ("sl_body_json(json)", "sl_body_jsonb(jsonb)", "sl_body_text(text)",
                      "sl_request()"):  # fmt: skip
        supabase_local.sql(f"DROP FUNCTION public.{signature}")


@pytest.mark.usefixtures("body_functions")
class TestSingleUnnamedParameter:
    def test_json_takes_the_whole_body(self, service_client):
        body = {"a": [1, 2], "b": {"c": None}}

        assert service_client.rpc("sl_body_json", body).execute().data == body

    def test_jsonb_takes_the_whole_body(self, service_client):
        response = service_client.rpc("sl_body_jsonb", {"x": 1}).execute()

        assert response.data == {"x": 1, "seen": True}

    def test_text_takes_a_text_plain_body(self, supabase_local):
        response = httpx.post(
            f"{supabase_local.url}/rest/v1/rpc/sl_body_text",
            content="hello",
            headers={"apikey": supabase_local.service_role_key, "Content-Type": "text/plain"},
        )

        assert (response.status_code, response.json()) == (200, "HELLO")

    def test_text_does_not_take_a_json_body(self, service_client):
        with pytest.raises(APIError) as raised:
            service_client.rpc("sl_body_text", {"x": 1}).execute()

        assert raised.value.code == "PGRST202"


@pytest.mark.usefixtures("body_functions")
def test_request_headers_and_cookies_are_set_for_the_transaction(supabase_local):
    from supabase import ClientOptions, create_client

    headers = {"X-Trace-Id": "trace-7", "Cookie": "theme=dark; sb=1"}
    client = create_client(
        supabase_local.url, supabase_local.service_role_key, ClientOptions(headers=headers)
    )
    seen = client.rpc("sl_request", {}).execute().data

    assert seen["headers"]["x-trace-id"] == "trace-7"  # names lower-cased, as PostgREST
    assert seen["headers"]["apikey"] == supabase_local.service_role_key
    assert "cookie" not in seen["headers"]
    assert seen["cookies"] == {"theme": "dark", "sb": "1"}
