"""Reconciliation of 1,000,000 events: time and round trips when the sides agree, and when
1, 10 and 1,000 scattered differences must be found.

Self-contained: creates a throwaway Django database (migrated) and a supabase_local server
on its own fresh database (the test fixture's helper), loads the same N events on both
sides with ``INSERT ... SELECT generate_series`` directly in SQL (checksums computed in
SQL in the canonical form, and spot-checked against ``events.checksums``), then runs
``reconciliation_run`` as the hourly job would. Both databases are dropped at the end.

    .venv/bin/python bench/reconcile.py [--events 1000000] [--diffs 1,10,1000] [--seed 7]

Design target (DESIGN.md): <= 10 s for 1,000,000 agreeing events on this 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.supabase_local import _pg_url, running_supabase_local  # noqa: E402

# One generator for both sides: the same rows, byte for byte. received_at is far in the
# past (no grace period applies); occurred_at is 3 ms earlier; payloads vary per seq.
ROWS_SQL = """
WITH g AS (
    SELECT s AS seq,
           timestamptz '2026-01-01 00:00:00+00' + s * interval '1001 microseconds' AS received_at
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS s
), c AS (
    SELECT seq, received_at, received_at - interval '3 milliseconds' AS occurred_at,
           'bench.' || (seq %% 7) AS event_type,
           'worker-' || (seq %% 16) AS source,
           'host-' || (seq %% 9) AS host
    FROM g
)
SELECT seq, event_type, source, 'system' AS criticality, occurred_at, received_at,
       jsonb_build_object('n', seq, 'host', host, 'ok', seq %% 2 = 0, 'tags', jsonb_build_array('a', 'b'))
           AS payload,
       encode(sha256(convert_to(
           '{"criticality":"system","event_type":"' || event_type
           || '","occurred_at":"' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           || '","payload":{"host":"' || host || '","n":' || seq
           || ',"ok":' || (seq %% 2 = 0)::text || ',"tags":["a","b"]}'
           || ',"received_at":"' || to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           || '","seq":' || seq || ',"source":"' || source || '"}', 'UTF8')), 'hex') AS checksum
FROM c
"""  # noqa: E501

LOCAL_LOAD = f"""
INSERT INTO events_event (seq, event_type, source, criticality, occurred_at, received_at,
                          payload, checksum, producer_id, idempotency_key)
SELECT seq, event_type, source, criticality, occurred_at, received_at, payload, checksum,
       NULL, NULL
FROM ({ROWS_SQL}) AS r
"""
LOCAL_DELIVERIES = """
INSERT INTO events_delivery (event_id, sink, status, attempts, last_error, created_at,
                             updated_at, sent_at)
SELECT e.seq, s.sink, 'sent', 1, '', e.received_at, e.received_at, e.received_at
FROM events_event AS e CROSS JOIN (VALUES ('websocket'), ('supabase')) AS s(sink)
"""
SEQ_COUNTER = """
INSERT INTO events_seqcounter (id, last_seq) VALUES (1, %(n)s)
ON CONFLICT (id) DO UPDATE SET last_seq = EXCLUDED.last_seq
"""
REMOTE_LOAD = f"""
INSERT INTO public.monitoring_events (seq, event_type, source, criticality, occurred_at,
                                      received_at, payload, checksum)
SELECT seq, event_type, source, criticality, occurred_at, received_at, payload, checksum
FROM ({ROWS_SQL}) AS r
"""


def _timed(label: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


def _load(url: str, statements: list[tuple[str, dict]], *, replica: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        if replica:  # no realtime capture triggers while bulk loading the copy
            conn.execute("SET session_replication_role = replica")
        for statement, params in statements:
            conn.execute(statement, params)
        conn.execute("CHECKPOINT")


def _vacuum(url: str, tables: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE, FREEZE) {table}")


def _load_remote(url: str, events: int, chunk: int) -> None:
    statements = [
        (REMOTE_LOAD, {"first": first, "last": min(first + chunk - 1, events)})
        for first in range(1, events + 1, chunk)
    ]
    _load(url, statements, replica=True)


def _load_local(url: str, events: int, chunk: int) -> None:
    statements = [
        (LOCAL_LOAD, {"first": first, "last": min(first + chunk - 1, events)})
        for first in range(1, events + 1, chunk)
    ]
    statements.append((LOCAL_DELIVERIES, {}))
    statements.append((SEQ_COUNTER, {"n": events}))
    _load(url, statements, replica=False)


def _damage(url: str, seqs: list[int]) -> dict[int, str]:
    """Scattered differences on the Supabase side, rotating through three kinds."""
    kinds: dict[int, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for index, seq in enumerate(seqs):
            kind = ("delete", "payload", "checksum")[index % 3]
            if kind == "delete":
                conn.execute("DELETE FROM public.monitoring_events WHERE seq = %s", [seq])
            elif kind == "payload":
                conn.execute(
                    "UPDATE public.monitoring_events SET payload = payload || '{\"n\": -1}' "
                    "WHERE seq = %s",
                    [seq],
                )
            else:
                conn.execute(
                    "UPDATE public.monitoring_events SET checksum = repeat('0', 64) WHERE seq = %s",
                    [seq],
                )
            kinds[seq] = kind
    return kinds


def _figures(run) -> str:
    load = os.getloadavg()[0]
    return (
        f"{run.duration_ms / 1000:6.2f} s  (load {load:.1f})  status={run.status:<13} "
        f"round trips supabase/local={run.round_trips_supabase}/{run.round_trips_local}  "
        f"chunks={run.chunks_compared:,}  rows fetched supabase/local="
        f"{run.rows_fetched_supabase:,}/{run.rows_fetched_local:,}  "
        f"discrepancies={run.discrepancy_count}  consistency={run.consistency_rate:.6f}"
        f"\n{'':<25}phases ms: {run.phase_ms}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--diffs", default="1,10,1000", help="comma-separated difference counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--load-chunk", type=int, default=250_000)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also time the largest difference count with fetch budgets 65536 and 0",
    )
    args = parser.parse_args()
    diffs = [int(x) for x in args.diffs.split(",") if x.strip()]

    database = f"monitor_bench_{secrets.token_hex(4)}"
    local_url = _pg_url(database)
    with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(database)))
    os.environ["DATABASE_URL"] = local_url.replace("postgresql://", "postgres://")
    os.environ["DJANGO_SETTINGS_MODULE"] = "monitor_project.settings.test"
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        from reconciliation.services import reconciliation_repair, reconciliation_run

        print(f"local database {database}: migrating", flush=True)
        call_command("migrate", verbosity=0)
        with running_supabase_local(faults=False) as server:
            settings.SUPABASE_URL = server.url
            settings.SUPABASE_ANON_KEY = server.anon_key
            settings.SUPABASE_SERVICE_ROLE_KEY = server.service_role_key
            settings.SUPABASE_JWT_SECRET = server.jwt_secret
            settings.SUPABASE_TIMEOUT_SECONDS = 60.0
            settings.RECONCILIATION_TIME_LIMIT_SECONDS = 600
            settings.RECONCILIATION_CONSISTENCY_THRESHOLD = 0.0  # no alerts from the bench

            print(f"loading {args.events:,} events on both sides", flush=True)
            _timed("local log (events + 2 deliveries each)", _load_local, local_url, args.events,
                   args.load_chunk)  # fmt: skip
            _timed("supabase copy", _load_remote, server.database_url, args.events, args.load_chunk)
            _timed("vacuum analyze", lambda: (
                _vacuum(local_url, ["events_event", "events_delivery"]),
                _vacuum(server.database_url, ["public.monitoring_events"]),
            ))  # fmt: skip

            # The SQL checksums are the canonical ones.
            from events.checksums import event_checksum
            from events.models import Event

            for event in Event.objects.filter(seq__in=[1, 2, args.events]):
                expected = event_checksum(
                    seq=event.seq, event_type=event.event_type, source=event.source,
                    criticality=event.criticality, occurred_at=event.occurred_at,
                    received_at=event.received_at, payload=event.payload,
                )  # fmt: skip
                assert expected == event.checksum, f"SQL checksum differs for seq {event.seq}"

            print("\nruns (open-ended, as the hourly job):", flush=True)
            for label in ("agreeing (1st)", "agreeing (2nd)", "agreeing (3rd)"):
                run = reconciliation_run()
                assert run.status == "clean", (run.status, run.error, run.counts)
                print(f"  {label:<22} {_figures(run)}", flush=True)

            rng = random.Random(args.seed)
            for count in diffs:
                seqs = sorted(rng.sample(range(1, args.events + 1), count))
                kinds = _damage(server.database_url, seqs)
                run = reconciliation_run()
                found = sorted(run.discrepancies.values_list("seq", flat=True))
                assert found == seqs, f"found {len(found)} of {count} differences"
                print(f"  {f'{count} differences':<22} {_figures(run)}", flush=True)
                if count == max(diffs) and args.sweep:
                    # the same differences with other fetch budgets (0: pure bisection)
                    for budget in (65536, 0):
                        settings.RECONCILIATION_FETCH_BUDGET_ROWS = budget
                        other = reconciliation_run()
                        label = f"  fetch budget {budget}"
                        print(f"  {label:<22} {_figures(other)}", flush=True)
                    del settings.RECONCILIATION_FETCH_BUDGET_ROWS
                started = time.perf_counter()
                result = reconciliation_repair(run_id=run.pk)
                repair_s = time.perf_counter() - started
                assert not result.remaining, result.remaining
                print(
                    f"  {'  repair':<22} {repair_s:6.2f} s  upserted={result.upserted} "
                    f"round trips={result.round_trips}  ({sorted(set(kinds.values()))})",
                    flush=True,
                )
            run = reconciliation_run()
            print(f"  {'after repairs':<22} {_figures(run)}", flush=True)
            assert run.status == "clean"
        connections.close_all()
    finally:
        with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(database)
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
