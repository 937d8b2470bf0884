"""Parity: the server's answers equal what PostgreSQL itself returns.

The same rows go through REST into the server's database and, by plain SQL, into a
second database to which ``supabase/migrations`` are applied directly (as ``supabase db
push`` would). Selects, counts and RPC digests from the server must equal the direct
answers, and the digest must match its documented definition (docs/supabase.md).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from supabase_local.config import DEFAULT_MIGRATIONS_DIR
from supabase_local.realtime.schema import REALTIME_SCHEMA_SQL
from tests.fixtures.supabase_local import _pg_url

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROWS = 240

CANONICAL_TEXT_SQL = """
    seq::text || '|' || event_type || '|' || source || '|' || criticality
    || '|' || round(date_part('epoch', occurred_at) * 1000000)::bigint::text
    || '|' || round(date_part('epoch', received_at) * 1000000)::bigint::text
    || '|' || payload::text || '|' || checksum
"""


def _dataset(base: int) -> list[dict]:
    """Rows with awkward content: unicode, quotes, '|', nested JSON, edge timestamps."""
    moments = [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 6, 30, 12, 0, 0, 1, tzinfo=UTC),
    ]
    rows = []
    for i in range(ROWS):
        seq = base + i
        occurred = moments[i % 4] + timedelta(microseconds=i * 7_919)
        rows.append({
            "seq": seq,
            "event_type": ["login", "Zürich \"quoted\"", "a|b", "日本"][i % 4],
            "source": f"src-{i % 5}",
            "criticality": ["critical", "performance", "user_activity", "system", "debug"][i % 5],
            "occurred_at": occurred.isoformat(),
            "received_at": (occurred + timedelta(milliseconds=i)).isoformat(),
            "payload": {"i": i, "zz": [1, 2.5, None, True], "a": {"b": "c\nd"}, "é": "ü"},
            "checksum": secrets.token_hex(32),
        })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def direct_db(supabase_local):
    """A second database holding only the migrations, applied file by file."""
    name = f"monitor_supabase_parity_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_url("postgres"), autocommit=True) as admin:
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = _pg_url(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # What every Supabase project has before its migrations: the realtime schema
            # (the private-broadcast migration writes policies on realtime.messages).
            conn.execute(REALTIME_SCHEMA_SQL)
            for path in sorted(DEFAULT_MIGRATIONS_DIR.glob("*.sql")):
                conn.execute(path.read_text(encoding="utf-8"))
        yield url
    finally:
        with psycopg.connect(_pg_url("postgres"), autocommit=True) as admin:
            admin.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
            )


@pytest.fixture(scope="module")
def both(supabase_local, direct_db):
    """The dataset stored through REST on the server and by SQL in the direct db."""
    from tests.supabase_local.conftest import make_client

    base = 7 * 10**15 + secrets.randbelow(10**9) * 1000
    rows = _dataset(base)
    client = make_client(supabase_local, supabase_local.service_role_key)
    client.table("monitoring_events").insert(rows, returning="minimal").execute()
    with psycopg.connect(direct_db, autocommit=True) as conn:
        published = supabase_local.sql(
            "SELECT seq, published_at FROM public.monitoring_events WHERE seq >= %s AND seq < %s",
            base,
            base + ROWS,
        )
        published_at = {row["seq"]: row["published_at"] for row in published}
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
                " occurred_at, received_at, payload, checksum, published_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (r["seq"], r["event_type"], r["source"], r["criticality"], r["occurred_at"],
                     r["received_at"], Jsonb(r["payload"]), r["checksum"],
                     published_at[r["seq"]])
                    for r in rows
                ],
            )  # fmt: skip
    yield client, direct_db, base
    supabase_local.sql(
        "DELETE FROM public.monitoring_events WHERE seq >= %s AND seq < %s", base, base + ROWS
    )


def _direct(url: str, query: str, *args) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET timezone = 'UTC'")
        return conn.execute(query, args or None).fetchall()


def test_select_returns_the_rows_postgresql_returns(both):
    client, direct_db, base = both

    served = (
        client.table("monitoring_events")
        .select("*")
        .gte("seq", base)
        .lt("seq", base + ROWS)
        .order("seq")
        .execute()
        .data
    )
    direct = _direct(
        direct_db,
        "SELECT to_json(e) FROM public.monitoring_events e WHERE seq >= %s AND seq < %s"
        " ORDER BY seq",
        base,
        base + ROWS,
    )

    assert served == [row[0] for row in direct]


@pytest.mark.parametrize(
    ("apply", "where"),
    [
        (lambda q: q.eq("criticality", "debug"), "criticality = 'debug'"),
        (lambda q: q.like("event_type", "*|*"), "event_type LIKE '%%|%%'"),
        (lambda q: q.gt("occurred_at", "2026-01-01T00:00:00+00:00"),
         "occurred_at > '2026-01-01T00:00:00+00:00'"),
        (lambda q: q.in_("source", ["src-1", "src-3"]), "source IN ('src-1', 'src-3')"),
        (lambda q: q.not_.eq("event_type", "日本").neq("source", "src-0"),
         "NOT event_type = '日本' AND source <> 'src-0'"),
        (lambda q: q.or_("criticality.eq.system,event_type.eq.login"),
         "(criticality = 'system' OR event_type = 'login')"),
    ],
)  # fmt: skip
def test_filtered_counts_and_pages_match(both, apply, where):
    client, direct_db, base = both
    query = client.table("monitoring_events").select("seq", count="exact")
    query = apply(query.gte("seq", base).lt("seq", base + ROWS))

    served = query.order("received_at", desc=True).range(3, 12).execute()
    direct = _direct(
        direct_db,
        f"SELECT seq, count(*) OVER () FROM public.monitoring_events"
        f" WHERE seq >= %s AND seq < %s AND {where} ORDER BY received_at DESC"
        f" OFFSET 3 LIMIT 10",
        base,
        base + ROWS,
    )

    assert [row["seq"] for row in served.data] == [row[0] for row in direct]
    assert served.count == direct[0][1]
    assert served.count > 10  # the filter leaves a real page to compare


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 10**6])
def test_rpc_digests_equal_the_direct_function(both, chunk_size):
    client, direct_db, base = both

    served = client.rpc(
        "monitoring_events_chunk_digests",
        {"from_seq": base - 5, "to_seq": base + ROWS + 5, "chunk_size": chunk_size},
    ).execute()
    direct = _direct(
        direct_db,
        "SELECT chunk_start, chunk_end, row_count, digest"
        " FROM public.monitoring_events_chunk_digests(%s, %s, %s)",
        base - 5,
        base + ROWS + 5,
        chunk_size,
    )

    assert [tuple(chunk.values()) for chunk in served.data] == direct
    assert sum(chunk["row_count"] for chunk in served.data) == ROWS


def test_digest_is_the_documented_definition(both):
    _, direct_db, base = both

    ((documented,),) = _direct(
        direct_db,
        f"SELECT ((sum(hashtextextended({CANONICAL_TEXT_SQL}, 0)) %% 18446744073709551616"
        " + 18446744073709551616) %% 18446744073709551616)::text"
        " FROM public.monitoring_events WHERE seq >= %s AND seq < %s",
        base,
        base + ROWS,
    )
    ((function,),) = _direct(
        direct_db,
        "SELECT digest FROM public.monitoring_events_chunk_digests(%s, %s, %s)",
        base,
        base + ROWS,
        ROWS,
    )
    chunked = _direct(
        direct_db,
        "SELECT digest FROM public.monitoring_events_chunk_digests(%s, %s, 17)",
        base,
        base + ROWS,
    )

    assert function == documented
    # Chunk digests combine: their sum modulo 2^64 is the digest of the whole range.
    assert str(sum(int(row[0]) for row in chunked) % 2**64) == documented


def test_canonical_times_are_exact_epoch_microseconds(both):
    _, direct_db, base = both

    rows = _direct(
        direct_db,
        "SELECT occurred_at, round(date_part('epoch', occurred_at) * 1000000)::bigint"
        " FROM public.monitoring_events WHERE seq >= %s AND seq < %s",
        base,
        base + ROWS,
    )

    for moment, micros in rows:
        assert micros == (moment - EPOCH) // timedelta(microseconds=1)


def test_canonical_payload_text_is_jsonb_output(both):
    _, direct_db, base = both

    ((text,),) = _direct(
        direct_db, "SELECT payload::text FROM public.monitoring_events WHERE seq = %s", base
    )

    # jsonb orders keys by length then bytes and prints ", " and ": " separators.
    assert text == '{"a": {"b": "c\\nd"}, "i": 0, "zz": [1, 2.5, null, true], "é": "ü"}'
    assert json.loads(text) == _dataset(base)[0]["payload"]


def test_row_digests_add_up_to_the_chunk_digest(both):
    client, direct_db, base = both

    rows = client.rpc(
        "monitoring_events_row_digests", {"from_seq": base, "to_seq": base + ROWS}
    ).execute()
    direct = _direct(
        direct_db,
        "SELECT seq, digest FROM public.monitoring_events_row_digests(%s, %s)",
        base,
        base + ROWS,
    )
    ((chunk_digest,),) = _direct(
        direct_db,
        "SELECT digest FROM public.monitoring_events_chunk_digests(%s, %s, %s)",
        base,
        base + ROWS,
        ROWS,
    )

    assert [(r["seq"], r["digest"]) for r in rows.data] == direct
    assert [r["seq"] for r in rows.data] == list(range(base, base + ROWS))
    assert str(sum(int(r["digest"]) for r in rows.data) % 2**64) == chunk_digest
