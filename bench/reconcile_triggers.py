"""What the reconciliation's triggers cost the writes they watch.

1. The copy's digest triggers (``supabase/migrations/20261129000100_…sql``): on a
   supabase_local of its own (all migrations applied), ``INSERT … ON CONFLICT DO NOTHING``
   statements of 1, 100 and 1,000 rows into ``monitoring_events`` as ``service_role`` (as
   the Supabase sink writes), with the four digest triggers disabled and enabled in
   alternating rounds.
2. The log's unseal triggers (``reconciliation/migrations/0006_…``): on a throwaway
   migrated Django database holding 10,000 sealed chunks, one transaction of N events,
   their Supabase deliveries, and those deliveries marked sent, for N = 1 and 100.

Prints the median per statement (per transaction) of each round, and the best round.

    .venv/bin/python bench/reconcile_triggers.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.supabase_local import _pg_url, running_supabase_local  # noqa: E402

REMOTE_TRIGGERS = [f"monitoring_events_digests_{op}" for op in ("insert", "update", "delete")]
REMOTE_INSERT = """
INSERT INTO public.monitoring_events (seq, event_type, source, criticality, occurred_at,
                                      received_at, payload, checksum)
SELECT s, 'bench.x', 'worker-1', 'system', now(), now(),
       jsonb_build_object('n', s, 'host', 'h'), repeat('a', 64)
FROM generate_series(%s::bigint, %s::bigint) AS s
ON CONFLICT (seq) DO NOTHING
"""
LOCAL_TRIGGERS = [
    ("events_event", f"reconciliation_unseal_events_{op}") for op in ("insert", "update", "delete")
] + [("events_delivery", f"reconciliation_unseal_deliveries_{op}") for op in ("insert", "update")]
LOCAL_EVENTS = """
INSERT INTO events_event (seq, event_type, source, criticality, occurred_at, received_at,
                          payload, checksum)
SELECT s, 'bench.x', 'w', 'system', now(), now(), jsonb_build_object('n', s), repeat('a', 64)
FROM generate_series(%s::bigint, %s::bigint) AS s
"""
LOCAL_DELIVERIES = """
INSERT INTO events_delivery (event_id, sink, status, attempts, last_error, created_at,
                             updated_at)
SELECT s, 'supabase', 'pending', 0, '', now(), now()
FROM generate_series(%s::bigint, %s::bigint) AS s
"""
LOCAL_SENT = """
UPDATE events_delivery SET status = 'sent', sent_at = now()
WHERE event_id >= %s AND event_id <= %s AND sink = 'supabase'
"""


def _toggle(conn, triggers: list[tuple[str, str]], on: bool) -> None:
    verb = "ENABLE" if on else "DISABLE"
    for table, name in triggers:
        conn.execute(
            pgsql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                pgsql.SQL(table), pgsql.SQL(verb), pgsql.Identifier(name)
            )
        )


def _report(label: str, medians: list[float]) -> None:
    rounds = ", ".join(f"{m:.3f}" for m in medians)
    print(f"  {label}: best {min(medians):.3f} ms (rounds: {rounds})", flush=True)


def remote(rounds: int) -> None:
    print("copy: INSERT … ON CONFLICT DO NOTHING as service_role, median per statement")
    triggers = [("public.monitoring_events", name) for name in REMOTE_TRIGGERS]
    with (
        running_supabase_local(faults=False) as server,
        psycopg.connect(server.database_url, autocommit=True) as conn,
    ):
        seq, results = 1, {}
        for _ in range(rounds):
            for size, count in ((1, 400), (100, 200), (1000, 40)):
                for on in (False, True):
                    _toggle(conn, triggers, on)
                    conn.execute("TRUNCATE public.monitoring_events")
                    conn.execute("SET ROLE service_role")
                    times = []
                    for _ in range(count):
                        started = time.perf_counter()
                        conn.execute(REMOTE_INSERT, [seq, seq + size - 1])
                        times.append(time.perf_counter() - started)
                        seq += size
                    conn.execute("RESET ROLE")
                    results.setdefault((size, on), []).append(statistics.median(times) * 1e3)
    for (size, on), medians in sorted(results.items()):
        _report(f"{size:5d}-row statements, digest triggers {'on ' if on else 'off'}", medians)


def local(rounds: int) -> None:
    print("log: one transaction of N events + their deliveries + marked sent, median")
    database = f"monitor_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(database)))
    url = _pg_url(database)
    os.environ["DATABASE_URL"] = url.replace("postgresql://", "postgres://")
    os.environ["DJANGO_SETTINGS_MODULE"] = "monitor_project.settings.test"
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        connections.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO reconciliation_sealedchunk (chunk_no, row_count, skipped, digest,"
                " hashed_at) SELECT g, 1024, 0, 0, now() FROM generate_series(0, 9999) AS g"
            )
            seq, results = 20_000_000, {}
            for _ in range(rounds):
                for size, count in ((1, 400), (100, 100)):
                    for on in (False, True):
                        _toggle(conn, LOCAL_TRIGGERS, on)
                        times = []
                        for _ in range(count):
                            started = time.perf_counter()
                            with conn.transaction():
                                for statement in (LOCAL_EVENTS, LOCAL_DELIVERIES, LOCAL_SENT):
                                    conn.execute(statement, [seq, seq + size - 1])
                            times.append(time.perf_counter() - started)
                            seq += size
                        results.setdefault((size, on), []).append(statistics.median(times) * 1e3)
    finally:
        with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(database)
                )
            )
    for (size, on), medians in sorted(results.items()):
        _report(f"{size:4d} events, unseal triggers {'on ' if on else 'off'}", medians)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    remote(args.rounds)
    local(args.rounds)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
