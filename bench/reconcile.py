"""Reconciliation over a long history: the hourly run, the full pass, and planted differences.

Loads ``--history`` events (default 10,000,000) into a Django database of its own (the
local log) and the same rows into the database of a supabase_local server of its own (the
Supabase copy), straight in SQL (``INSERT ... SELECT generate_series``, checksums computed
in SQL in the canonical form and spot-checked against ``events.checksums``). One event in
1,000 (seq ending in 500) is routed away from Supabase (delivery ``skipped``) and is not
in the copy. Then, through the product's own services (Supabase reached through
supabase_local's REST/RPC, as in production):

1. the full pass three times: the first one also seeds the sealed-chunk digests on both
   sides (the copy is bulk-loaded with its triggers off, the log has none stored yet),
   the second is the rolling full pass as it runs (Supabase re-hashed against the log's
   stored digests), the third re-hashes the log too (``RECONCILIATION_FULL_PASS_REHASH_LOCAL``);
   then one hourly run;
2. ``--new`` new events (default 10,000) on both sides (the copy's in 100-row statements
   as the Supabase sink writes them), then the hourly run three times;
3. for each count of ``--diffs``: that many differences planted in the copy as a holder
   of the secret key could (role ``service_role``): rows deleted, rows added, payloads
   edited behind an unchanged checksum, spread over old and new rows; the hourly run must
   report every one; then the repair, and an hourly run that must be clean;
4. ``--bypass`` differences planted by a superuser with the copy's triggers switched off
   (``session_replication_role = replica``): what only the full pass can find.

The databases (``--database``, and ``<database>_supabase`` for the copy) are kept with
``--keep`` so that a second run skips the load (minutes at 10 M rows); ``--drop`` drops
them and exits.

    .venv/bin/python bench/reconcile.py [--history 10000000] [--new 10000]
        [--diffs 1,10,1000] [--bypass 10] [--seed 7] [--keep] [--drop]

Targets (issue 15): the hourly run <= 1 s and the full pass <= 20 s at 10 M events.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import sys
import threading
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

SKIPPED = "seq %% 1000 = 500"  # routed away from Supabase

LOCAL_LOAD = f"""
INSERT INTO events_event (seq, event_type, source, criticality, occurred_at, received_at,
                          payload, checksum, producer_id, idempotency_key)
SELECT seq, event_type, source, criticality, occurred_at, received_at, payload, checksum,
       NULL, NULL
FROM ({ROWS_SQL}) AS r
"""
# Only the supabase sink's deliveries: the websocket ones play no part in reconciliation.
LOCAL_DELIVERIES = f"""
INSERT INTO events_delivery (event_id, sink, status, attempts, last_error, created_at,
                             updated_at, sent_at)
SELECT seq, 'supabase', CASE WHEN {SKIPPED} THEN 'skipped' ELSE 'sent' END, 1, '',
       now(), now(), now()
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS seq
"""
SEQ_COUNTER = """
INSERT INTO events_seqcounter (id, last_seq) VALUES (1, %(n)s)
ON CONFLICT (id) DO UPDATE SET last_seq = EXCLUDED.last_seq
"""
REMOTE_LOAD = f"""
INSERT INTO public.monitoring_events (seq, event_type, source, criticality, occurred_at,
                                      received_at, payload, checksum)
SELECT seq, event_type, source, criticality, occurred_at, received_at, payload, checksum
FROM ({ROWS_SQL}) AS r WHERE NOT ({SKIPPED})
"""
LOAD_CHUNK = 1_000_000


def _print(*parts) -> None:
    print(*parts, flush=True)


def _timed(label: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    _print(f"  {label}: {time.perf_counter() - started:.1f} s")
    return result


def _execute(url: str, statements, *, replica: bool = False, role: str | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        if replica:  # a superuser with the copy's triggers off (bulk load, bypass)
            conn.execute("SET session_replication_role = replica")
        if role:
            conn.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
        for statement, params in statements:
            conn.execute(statement, params)


def _ranges(first: int, last: int, size: int):
    return [(a, min(a + size - 1, last)) for a in range(first, last + 1, size)]


def _load_local(url: str, first: int, last: int) -> None:
    statements = []
    for a, b in _ranges(first, last, LOAD_CHUNK):
        statements.append((LOCAL_LOAD, {"first": a, "last": b}))
        statements.append((LOCAL_DELIVERIES, {"first": a, "last": b}))
    statements.append((SEQ_COUNTER, {"n": last}))
    _execute(url, statements)


def _load_remote(url: str, first: int, last: int, *, batch: int, replica: bool) -> None:
    statements = [(REMOTE_LOAD, {"first": a, "last": b}) for a, b in _ranges(first, last, batch)]
    _execute(url, statements, replica=replica)


def _count(url: str, table: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(max(seq), 0) FROM {table}").fetchone()
    return row[0], row[1]


def _database_exists(name: str) -> bool:
    with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())


def _drop(name: str) -> None:
    with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
        )


# --- planted differences -------------------------------------------------------------------

PLANT_DELETE = "DELETE FROM public.monitoring_events WHERE seq = %s"
# An edit behind an unchanged checksum: the payload changes, the checksum column does not.
PLANT_EDIT = (
    "UPDATE public.monitoring_events SET payload = payload || '{\"planted\": true}' WHERE seq = %s"
)
# A row the local log does not hold for Supabase: at a seq routed away (old rows), or above
# the local log's highest seq (new rows).
PLANT_ADD = """
INSERT INTO public.monitoring_events (seq, event_type, source, criticality, occurred_at,
                                      received_at, payload, checksum)
VALUES (%s, 'planted.extra', 'bench', 'system', timestamptz '2026-01-01 00:00:00+00',
        timestamptz '2026-01-01 00:00:00+00', '{}', repeat('a', 64))
"""


def _plant(url: str, *, count: int, history: int, top: int, rng, replica: bool, used: set):
    """``count`` differences in the copy, half in old rows (seq <= history) and half in
    new ones, rotating through delete / add / edit; returns {seq: kind}."""
    planted: dict[int, str] = {}
    kinds = ("delete", "add", "edit")
    statements = []
    extra_seq = top + 1 + len([s for s in used if s > top])
    for index in range(count):
        kind = kinds[index % 3]
        old = index % 2 == 0
        if kind == "add" and not old:
            seq = extra_seq
            extra_seq += 1
        else:
            while True:
                low, high = (1, history) if old else (history + 1, top)
                seq = rng.randint(low, high)
                skipped = seq % 1000 == 500
                if seq not in used and skipped == (kind == "add"):
                    break
        used.add(seq)
        planted[seq] = kind
        statement = {"delete": PLANT_DELETE, "edit": PLANT_EDIT, "add": PLANT_ADD}[kind]
        statements.append((statement, [seq]))
    if replica:
        _execute(url, statements, replica=True)
    else:
        _execute(url, statements, role="service_role")
    return planted


# --- runs -----------------------------------------------------------------------------------


def _figures(run) -> str:
    load = os.getloadavg()[0]
    mode = getattr(run, "mode", "")
    rehashed = getattr(run, "chunks_rehashed", None)
    return (
        f"{run.duration_ms / 1000:6.2f} s  (load {load:.1f})  {mode:<11} status={run.status:<13} "
        f"seqs {run.from_seq}..{run.to_seq}  chunks compared={run.chunks_compared:,}"
        + (f" re-hashed={rehashed:,}" if rehashed is not None else "")
        + f"  round trips supabase/local={run.round_trips_supabase}/{run.round_trips_local}  "
        f"rows fetched supabase/local={run.rows_fetched_supabase:,}/{run.rows_fetched_local:,}  "
        f"discrepancies={run.discrepancy_count}"
        f"\n{'':<28}phases ms: {run.phase_ms}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=10_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--diffs", default="1,10,1000", help="comma-separated difference counts")
    parser.add_argument("--bypass", type=int, default=10, help="differences behind the triggers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default="monitor_rc_bench")
    parser.add_argument("--keep", action="store_true", help="keep both databases for next time")
    parser.add_argument("--drop", action="store_true", help="drop both databases and exit")
    args = parser.parse_args()
    diffs = [int(x) for x in args.diffs.split(",") if x.strip()]
    database, remote_database = args.database, f"{args.database}_supabase"
    if args.drop:
        _drop(database)
        _drop(remote_database)
        _print(f"dropped {database} and {remote_database}")
        return 0

    local_url = _pg_url(database)
    if not _database_exists(database):
        with psycopg.connect(_pg_url("postgres"), autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(database)))
    os.environ["DATABASE_URL"] = local_url.replace("postgresql://", "postgres://")
    os.environ["DJANGO_SETTINGS_MODULE"] = "monitor_project.settings.test"
    history, top = args.history, args.history + args.new
    ok = False
    try:
        import django

        django.setup()
        import logging

        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        from reconciliation import services

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
        call_command("migrate", verbosity=0)
        with running_supabase_local(faults=False, database=remote_database) as server:
            settings.SUPABASE_URL = server.url
            settings.SUPABASE_ANON_KEY = server.anon_key
            settings.SUPABASE_SERVICE_ROLE_KEY = server.service_role_key
            settings.SUPABASE_JWT_SECRET = server.jwt_secret
            settings.SUPABASE_TIMEOUT_SECONDS = 120.0
            settings.RECONCILIATION_TIME_LIMIT_SECONDS = 1800
            settings.RECONCILIATION_CONSISTENCY_THRESHOLD = 0.0  # no alerts from the bench
            remote_url = server.database_url

            # Back to exactly the history on both sides (a kept database may hold a
            # previous run's new events), then load whatever is missing.
            _execute(local_url, [
                ("DELETE FROM events_delivery WHERE event_id > %s", [history]),
                ("DELETE FROM events_event WHERE seq > %s", [history]),
                ("TRUNCATE reconciliation_reconciliationrun CASCADE", None),
            ])  # fmt: skip
            _execute(remote_url, [
                ("DELETE FROM public.monitoring_events WHERE seq > %s", [history]),
                # rows a previous run added at routed-away seqs
                (f"DELETE FROM public.monitoring_events WHERE {SKIPPED}", {}),
            ])  # fmt: skip
            if "reconciliation_sealedchunk" in connections["default"].introspection.table_names():
                _execute(local_url, [("DELETE FROM reconciliation_sealedchunk", None)])
            local_count, local_top = _count(local_url, "events_event")
            remote_count, _ = _count(remote_url, "public.monitoring_events")
            expected_remote = history - (history + 500) // 1000
            if local_count != history or remote_count != expected_remote:
                _print(f"loading {history:,} events on both sides (local {local_count:,}, "
                       f"copy {remote_count:,} before)")  # fmt: skip
                _execute(local_url, [("TRUNCATE events_event, events_delivery CASCADE", None)])
                _execute(remote_url, [("TRUNCATE public.monitoring_events", None)])
                threads = [
                    threading.Thread(target=_timed, args=(
                        "local log (events + supabase deliveries)", _load_local, local_url, 1,
                        history,
                    )),
                    threading.Thread(target=_timed, args=(
                        "supabase copy", _load_remote, remote_url, 1, history,
                    ), kwargs={"batch": LOAD_CHUNK, "replica": True}),
                ]  # fmt: skip
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                _timed("vacuum analyze", _execute, local_url, [
                    ("VACUUM (ANALYZE) events_event", None),
                    ("VACUUM (ANALYZE) events_delivery", None),
                ])  # fmt: skip
                _timed("vacuum analyze (copy)", _execute, remote_url, [
                    ("VACUUM (ANALYZE) public.monitoring_events", None),
                ])  # fmt: skip
                local_count, _ = _count(local_url, "events_event")
                remote_count, _ = _count(remote_url, "public.monitoring_events")
            assert (local_count, remote_count) == (history, expected_remote), (
                local_count,
                remote_count,
            )
            _print(f"history: {local_count:,} events locally, {remote_count:,} in the copy")

            from events.checksums import event_checksum
            from events.models import Event

            for event in Event.objects.filter(seq__in=[1, 2, history]):
                expected = event_checksum(
                    seq=event.seq, event_type=event.event_type, source=event.source,
                    criticality=event.criticality, occurred_at=event.occurred_at,
                    received_at=event.received_at, payload=event.payload,
                )  # fmt: skip
                assert expected == event.checksum, f"SQL checksum differs for seq {event.seq}"

            # Both the old services (one kind of run, re-hashing its whole range) and the
            # new ones (incremental hourly run, --full pass) are driven by the same script.
            new_api = "full" in inspect.signature(services.reconciliation_run).parameters

            def full_pass():
                if new_api:
                    return services.reconciliation_run(full=True)
                return services.reconciliation_run()  # the old manual run: everything

            def hourly():
                return services.reconciliation_run_hourly()

            _print(f"\n{'incremental' if new_api else 'old (before)'} services; uptime: "
                   f"{os.popen('uptime').read().strip()}")  # fmt: skip
            _print("full pass over the history:")
            for label in ("1st (seeds digests)", "2nd", "3rd, local re-hashed too"):
                settings.RECONCILIATION_FULL_PASS_REHASH_LOCAL = label.startswith("3rd")
                if label.startswith("3rd") and not new_api:
                    continue
                run = full_pass()
                assert run.status == "clean", (run.status, run.error, run.counts)
                _print(f"  {label:<26}{_figures(run)}")
            settings.RECONCILIATION_FULL_PASS_REHASH_LOCAL = False

            run = hourly()  # the hourly watermark: everything so far
            _print(f"  {'hourly before new events':<26}{_figures(run)}")
            _print(f"\n{args.new:,} new events:")
            _timed("local log", _load_local, local_url, history + 1, top)
            _timed("supabase copy (100-row statements)", _load_remote, remote_url, history + 1,
                   top, batch=100, replica=False)  # fmt: skip
            for label in ("hourly (1st, seals new)", "hourly (2nd)", "hourly (3rd)"):
                run = hourly()
                assert run.status == "clean", (run.status, run.error, run.counts)
                _print(f"  {label:<26}{_figures(run)}")
            if not new_api:
                diffs, args.bypass = [], 0  # the old hourly run never looks at old rows

            rng = random.Random(args.seed)
            used: set[int] = set()
            for count, replica in [(c, False) for c in diffs] + [(args.bypass, True)]:
                if not count:
                    continue
                how = "behind the triggers (superuser, replica)" if replica else "service_role"
                _print(f"\n{count:,} differences planted by {how}:")
                planted = _plant(remote_url, count=count, history=history, top=top, rng=rng,
                                 replica=replica, used=used)  # fmt: skip
                runs = [("hourly", hourly())]
                if replica:
                    runs.append(("full pass", full_pass()))
                for label, run in runs:
                    found = set(run.discrepancies.filter(category__in=[
                        "missing_in_supabase", "extra_in_supabase", "content_mismatch",
                        "checksum_invalid",
                    ]).values_list("seq", flat=True))  # fmt: skip
                    hits = len(found & planted.keys())
                    _print(f"  {label:<26}{_figures(run)}\n{'':<28}found {hits} of "
                           f"{len(planted)} planted, {len(found - planted.keys())} others; "
                           f"counts {run.counts}")  # fmt: skip
                assert found == planted.keys(), (sorted(planted.keys() - found)[:10],
                                                 sorted(found - planted.keys())[:10])  # fmt: skip
                started = time.perf_counter()
                result = services.reconciliation_repair(run_id=run.pk, delete_extras=True)
                assert not result.remaining, result.remaining
                _print(f"  {'repair':<26}{time.perf_counter() - started:6.2f} s  "
                       f"upserted={result.upserted} deleted={result.deleted} "
                       f"round trips={result.round_trips}")  # fmt: skip
                for label in ("hourly after repair", "full pass after repair"):
                    if label.startswith("full") and not replica:
                        continue
                    run = hourly() if label.startswith("hourly") else full_pass()
                    _print(f"  {label:<26}{_figures(run)}")
                    assert run.status == "clean", (run.status, run.counts)
                used.clear()
            _print(f"\nuptime: {os.popen('uptime').read().strip()}")
        connections.close_all()
        ok = True
    finally:
        if not args.keep:
            _drop(database)
            _drop(remote_database)
        elif not ok:
            _print(f"kept {database} and {remote_database} (--drop removes them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
