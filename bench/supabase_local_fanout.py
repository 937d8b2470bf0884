"""Fan-out latency of supabase_local Realtime: one committed row to N subscribers.

    .venv/bin/python bench/supabase_local_fanout.py                  # starts a server
    .venv/bin/python bench/supabase_local_fanout.py --url http://127.0.0.1:54321 \\
        --database-url postgresql://postgres@127.0.0.1:5432/supabase_local

N subscribers (default 1,000) join one topic with a ``postgres_changes`` INSERT binding
on ``public.monitoring_events``: most are raw WebSocket clients speaking vsn 1.0.0,
spread over worker processes (load generators, not conformance clients); a few are the
official Python ``realtime`` client. The main process then inserts rows through plain
SQL at a steady rate; each row carries ``payload.t``, the wall-clock time just before
its single-statement (autocommit) INSERT. Every receiver notes its receipt time on the
same machine clock. Printed, over all deliveries: insert-to-receipt latency (includes
the database commit and its WAL flush), commit-acknowledged-to-receipt latency (the
server's share: capture, RLS, fan-out, client parsing), the INSERT round trip itself,
and how many deliveries arrived out of how many expected. The target applies to
insert-to-receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wsload import ClientSpec, Fleet  # noqa: E402
from supabase_local.auth import mint_token  # noqa: E402
from supabase_local.config import DEV_JWT_SECRET  # noqa: E402

TOPIC = "realtime:bench-fanout"
BINDING = {"event": "INSERT", "schema": "public", "table": "monitoring_events"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ws_url(url: str, key: str, vsn: str = "1.0.0") -> str:
    base = url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
    return f"{base}/realtime/v1/websocket?apikey={key}&vsn={vsn}"


# -- official clients (main process) ----------------------------------------------------


async def _official_clients(url: str, key: str, n: int, out: list[tuple[float, float]]) -> list:
    from realtime import AsyncRealtimeClient

    clients = []
    for _ in range(n):
        client = AsyncRealtimeClient(f"{url}/realtime/v1", key, auto_reconnect=False)
        channel = client.channel(TOPIC.removeprefix("realtime:"))

        def on_change(payload, _out=out) -> None:  # noqa: ANN001
            t = payload["data"]["record"]["payload"].get("t")
            if t is not None:
                _out.append((t, time.time()))

        channel.on_postgres_changes("INSERT", on_change, table="monitoring_events")
        await channel.subscribe()
        clients.append(client)
    return clients


# -- server ----------------------------------------------------------------------------


def _start_server(database_url: str, secret: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supabase_local",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--jwt-secret",
            secret,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    raise SystemExit("server did not start within 60 s")


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _summary(values: list[float]) -> str:
    if not values:
        return "no data"
    return (
        f"p50 {_pct(values, 50):.1f}  p95 {_pct(values, 95):.1f}  p99 {_pct(values, 99):.1f}"
        f"  max {max(values):.1f}  mean {statistics.fmean(values):.1f}"
    )


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def _run(args: argparse.Namespace) -> int:
    server = None
    url = args.url
    if url is None:
        server, url = _start_server(args.database_url, args.jwt_secret)
    key = mint_token(secret=args.jwt_secret, role="service_role", expires_in=3600)
    try:
        # receipts: (stamp written into the row, receipt time), both time.time()
        official_lat: list[tuple[float, float]] = []
        official = await _official_clients(url, key, args.official, official_lat)
        raw_count = args.subscribers - args.official
        join = json.dumps(
            {
                "topic": TOPIC,
                "event": "phx_join",
                "ref": "1",
                "join_ref": "1",
                "payload": {"config": {"postgres_changes": [BINDING]}},
            }
        )
        spec = ClientSpec(
            url=_ws_url(url, key),
            join=join,
            ready_marker=b"Subscribed to PostgreSQL",
            event_marker=b'"postgres_changes"',
        )
        fleet = Fleet([spec] * raw_count, workers=args.workers, ready_timeout=60)
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, fleet.start)
        if ready.failed:
            fleet.close()
            raise SystemExit(f"only {ready.subscribed}/{raw_count} joined: {ready.failures}")
        print(
            f"{args.subscribers} subscribers joined "
            f"({raw_count} raw vsn 1.0.0 over {args.workers} processes, "
            f"{args.official} official Python clients)"
        )

        conn = await asyncpg.connect(args.database_url)
        base = int(time.time() * 1000) * 1000
        insert = (
            "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
            " occurred_at, received_at, payload, checksum)"
            " VALUES ($1, 'bench.fanout', 'bench', 'debug', now(), now(), $2::jsonb, $3)"
        )
        # Warm-up rows carry no stamp: the first change pays for cold caches.
        for i in range(3):
            await conn.execute(insert, base - 10 + i, "{}", "0" * 64)
        await asyncio.sleep(1.0)
        interval = 1.0 / args.rate
        cpu_before = _cpu_seconds(server.pid) if server is not None else None
        commit_ms: list[float] = []
        committed: dict[float, float] = {}
        total = int(args.rate * args.duration)
        start = time.perf_counter()
        for i in range(total):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = time.time()
            payload = json.dumps({"t": stamp, "i": i})
            await conn.execute(
                insert, base + i, payload, hashlib.sha256(payload.encode()).hexdigest()
            )
            committed[stamp] = time.time()
            commit_ms.append((committed[stamp] - stamp) * 1000)
        # Wait until every delivery is in, or none has come for 3 s (a loss), at most 60 s.
        expected_raw = total * raw_count
        last, last_change = -1, time.monotonic()
        for _ in range(600):
            counts = await loop.run_in_executor(None, fleet.count)
            if counts >= expected_raw and len(official_lat) >= total * args.official:
                break
            if counts != last:
                last, last_change = counts, time.monotonic()
            elif time.monotonic() - last_change > 3:
                break
            await asyncio.sleep(0.1)
        cpu_after = _cpu_seconds(server.pid) if server is not None else None
        records = await loop.run_in_executor(None, fleet.collect)
        latencies = [(stamp, received) for _tag, _index, stamp, received in records]
        await conn.execute(
            "DELETE FROM public.monitoring_events WHERE seq >= $1 AND seq < $2",
            base - 10,
            base + total,
        )
        await conn.close()
        for client in official:
            with contextlib.suppress(Exception):
                await client.close()

        every = latencies + official_lat
        expected = total * args.subscribers
        ms = [(recv - stamp) * 1000 for stamp, recv in every]
        # After the commit was acknowledged to the inserter: the server's own share.
        after = [(recv - committed[stamp]) * 1000 for stamp, recv in every if stamp in committed]
        oms = [(recv - stamp) * 1000 for stamp, recv in official_lat]
        print(f"rows inserted: {total} at {args.rate}/s; deliveries: {len(every)}/{expected}")
        print(f"insert->receipt latency ms (stamp before INSERT): {_summary(ms)}")
        print(f"commit-ack->receipt latency ms:                  {_summary(after)}")
        print(f"INSERT+commit round trip ms:                     {_summary(commit_ms)}")
        if oms:
            print(f"official clients only, insert->receipt ms:       {_summary(oms)}")
        if cpu_before is not None and cpu_after is not None:
            user = (cpu_after[0] - cpu_before[0]) / total * 1000
            system = (cpu_after[1] - cpu_before[1]) / total * 1000
            print(
                f"server CPU per change (all threads, whole pipeline): {user + system:.1f} ms"
                f" (user {user:.1f}, kernel {system:.1f}) for {args.subscribers} subscribers"
            )
        ok = len(every) == expected and _pct(ms, 95) <= args.target_p95_ms
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at the end (1, 5, 15 min): {load}  [{os.cpu_count()} CPUs]")
        verdict = "met" if ok else "NOT met"
        print(f"target p95 <= {args.target_p95_ms:.0f} ms: {verdict}")
        return 0 if ok else 1
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running supabase_local (default: start one)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "SUPABASE_LOCAL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/supabase_bench"
        ),
    )
    parser.add_argument("--jwt-secret", default=DEV_JWT_SECRET)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--official", type=int, default=3, help="official Python clients")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--rate", type=float, default=10.0, help="rows per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of inserts")
    parser.add_argument("--target-p95-ms", type=float, default=50.0)
    args = parser.parse_args()
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
