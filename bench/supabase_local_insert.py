"""Insert throughput of supabase_local through the official Python client.

Starts its own server on a throwaway database (the test fixture's helper), then sends
``--batches`` batches of ``--batch-size`` rows with ``upsert(on_conflict="seq",
returning="minimal")`` -- what the Supabase sink does -- and with plain ``insert``,
and prints rows/s for each. Target (issue 3): >= 10,000 rows/s with 1,000-row batches.

    .venv/bin/python bench/supabase_local_insert.py [--batches 50] [--batch-size 1000]
    .venv/bin/python bench/supabase_local_insert.py --url URL --key SERVICE_ROLE_KEY
    .venv/bin/python bench/supabase_local_insert.py --without-capture   # attribution only

``--without-capture`` disables the table's triggers (Realtime's change capture) for the
run, to show what REST costs on its own; a real server always captures.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supabase import ClientOptions, create_client  # noqa: E402

from tests.fixtures.supabase_local import running_supabase_local  # noqa: E402

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _row(seq: int) -> dict[str, Any]:
    moment = BASE_TIME + timedelta(microseconds=(seq % 10**12) * 1_001)
    return {
        "seq": seq,
        "event_type": f"bench.{seq % 7}",
        "source": "bench",
        "criticality": ("critical", "performance", "user_activity", "system", "debug")[seq % 5],
        "occurred_at": moment.isoformat(),
        "received_at": (moment + timedelta(milliseconds=3)).isoformat(),
        "payload": {"n": seq, "host": f"web-{seq % 9}", "tags": ["a", "b"]},
        "checksum": f"{seq:064x}",
    }


@contextlib.contextmanager
def _server(url: str | None, key: str | None, capture: bool) -> Iterator[tuple[str, str]]:
    if url and key:
        yield url, key
        return
    with running_supabase_local(faults=False) as server:
        if not capture:
            server.sql("ALTER TABLE public.monitoring_events DISABLE TRIGGER USER")
        yield server.url, server.service_role_key


def _run(table: Any, mode: str, first_seq: int, batches: int, size: int) -> tuple[float, list]:
    # Rows are built before the clock starts: a caller has its rows already; encoding
    # them (the client's job) and everything after it is measured.
    all_batches = [
        [_row(first_seq + index * size + i) for i in range(size)] for index in range(batches)
    ]
    batch_seconds = []
    started = time.perf_counter()
    for rows in all_batches:
        t0 = time.perf_counter()
        if mode == "upsert":
            table.upsert(rows, on_conflict="seq", returning="minimal").execute()
        else:
            table.insert(rows, returning="minimal").execute()
        batch_seconds.append(time.perf_counter() - t0)
    return time.perf_counter() - started, batch_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--key", help="its service_role key")
    parser.add_argument(
        "--without-capture",
        action="store_true",
        help="disable the Realtime capture triggers (own server only), for attribution",
    )
    args = parser.parse_args()

    with _server(args.url, args.key, capture=not args.without_capture) as (url, key):
        client = create_client(url, key, options=ClientOptions(postgrest_client_retry=False))
        table = client.table("monitoring_events")
        first_seq = 10**12 + int(time.time()) * 10**3  # clear of rows other runs left
        _run(table, "insert", first_seq - 10 * args.batch_size, 3, args.batch_size)  # warm-up
        for number, mode in enumerate(("upsert", "insert")):
            start = first_seq + number * args.batches * args.batch_size
            elapsed, per_batch = _run(table, mode, start, args.batches, args.batch_size)
            rows = args.batches * args.batch_size
            print(
                f"{mode:6s}: {rows} rows in {args.batches} batches of {args.batch_size}:"
                f" {rows / elapsed:,.0f} rows/s"
                f" (batch median {statistics.median(per_batch) * 1000:.1f} ms,"
                f" max {max(per_batch) * 1000:.1f} ms)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
