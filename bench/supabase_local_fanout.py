"""Fan-out latency of supabase_local Realtime: one committed message to N subscribers.

    .venv/bin/python bench/supabase_local_fanout.py                  # starts a server
    .venv/bin/python bench/supabase_local_fanout.py --plan team      # with Team's quotas
    .venv/bin/python bench/supabase_local_fanout.py --mode postgres-changes

Two phases in one run, the same N subscribers (default 1,000) and the same timetable:

1. **floor**: a bare ``websockets`` broadcast server (bench/latency.py's), no database;
2. **supabase_local**, by ``--mode``:
   * ``private-broadcast`` (default, the product's path): every subscriber is a signed-in
     user joining the private topic ``bench-fanout``, authorised by an RLS policy on
     ``realtime.messages``; the publisher calls ``realtime.send`` in its own transaction;
   * ``postgres-changes``: a ``postgres_changes`` INSERT binding on
     ``public.monitoring_events``; the publisher inserts rows.

Most subscribers are raw WebSocket clients speaking vsn 1.0.0 spread over worker
processes (load generators, not conformance clients); a few are the official Python
``realtime`` client. Every message carries ``t``, the wall-clock time just before the
publisher's statement; every receiver notes its receipt time on the same clock. Printed:
publish-to-receipt latency per phase and its p95 as a multiple of the floor's, the
server's share after the commit was acknowledged, deliveries against expected, the
server's CPU per message, and the messages per second the server counted for its quota
(``GET /metrics``), next to the plan's limit.
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
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wsload import ClientSpec, Fleet  # noqa: E402
from supabase_local.api_keys import SECRET_PREFIX, api_key_derive  # noqa: E402
from supabase_local.auth import mint_token  # noqa: E402
from supabase_local.config import DEV_JWT_SECRET  # noqa: E402
from tests.fixtures.supabase_local import prometheus_metrics  # noqa: E402

TOPIC = "realtime:bench-fanout"
BINDING = {"event": "INSERT", "schema": "public", "table": "monitoring_events"}
POLICY = "bench fanout: subscribers receive"
FLOOR_READY = "floor server ready"
INSERT = (
    "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
    " occurred_at, received_at, payload, checksum)"
    " VALUES ($1, 'bench.fanout', 'bench', 'debug', now(), now(), $2::jsonb, $3)"
)
SEND = "SELECT realtime.send($1::jsonb, 'tick', 'bench-fanout', true)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ws_url(url: str, key: str, vsn: str = "1.0.0") -> str:
    base = url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
    return f"{base}/realtime/v1/websocket?apikey={key}&vsn={vsn}"


# -- official clients (main process) ----------------------------------------------------


async def _official_clients(
    url: str, key: str, n: int, out: list[tuple[float, float]], *, mode: str, user_token: str
) -> list:
    from realtime import AsyncRealtimeClient

    clients = []
    for _ in range(n):
        client = AsyncRealtimeClient(f"{url}/realtime/v1", key, auto_reconnect=False)
        if mode == "private-broadcast":
            await client.set_auth(user_token)
            channel = client.channel(TOPIC.removeprefix("realtime:"), {"config": {"private": True}})

            def on_message(message, _out=out) -> None:  # noqa: ANN001
                t = message["payload"].get("t")
                if t is not None:
                    _out.append((t, time.time()))

            channel.on_broadcast("tick", on_message)
        else:
            channel = client.channel(TOPIC.removeprefix("realtime:"))

            def on_change(payload, _out=out) -> None:  # noqa: ANN001
                t = payload["data"]["record"]["payload"].get("t")
                if t is not None:
                    _out.append((t, time.time()))

            channel.on_postgres_changes("INSERT", on_change, table="monitoring_events")
        await channel.subscribe()
        clients.append(client)
    return clients


# -- servers ---------------------------------------------------------------------------


def _start(argv: list[str], ready: Callable[[], bool], what: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready():
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start within 60 s")


def _listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    return check


def _start_server(database_url: str, secret: str, plan: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    argv = [sys.executable, "-m", "supabase_local", "--port", str(port),
            "--database-url", database_url, f"--jwt-secret={secret}", "--plan", plan]  # fmt: skip
    return _start(argv, _listening(port), "supabase_local"), f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


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


async def _publish(publish: Callable[[int, float], Awaitable[None]], args) -> dict[float, float]:  # noqa: ANN001
    """Publish ``rate * duration`` stamped messages on a fixed timetable; returns
    {stamp: time the publisher's call returned}."""
    done: dict[float, float] = {}
    interval = 1.0 / args.rate
    start = time.perf_counter()
    for i in range(int(args.rate * args.duration)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = time.time()
        await publish(i, stamp)
        done[stamp] = time.time()
    return done


async def _wait_for(fleet: Fleet, expected: int, extra: Callable[[], bool]) -> None:
    """Until every delivery is in, or none has come for 3 s (a loss), at most 60 s."""
    loop = asyncio.get_running_loop()
    last, last_change = -1, time.monotonic()
    for _ in range(600):
        counts = await loop.run_in_executor(None, fleet.count)
        if counts >= expected and extra():
            return
        if counts != last:
            last, last_change = counts, time.monotonic()
        elif time.monotonic() - last_change > 3:
            return
        await asyncio.sleep(0.1)


# -- phase 1: the floor --------------------------------------------------------------------


async def _floor(args: argparse.Namespace) -> list[float]:
    from websockets.asyncio.client import connect

    port = _free_port()
    server = _start([sys.executable, str(ROOT / "bench" / "latency.py"), "--serve-floor",
                     str(port)], _listening(port), "the floor server")  # fmt: skip
    try:
        specs = [
            ClientSpec(url=f"ws://127.0.0.1:{port}/feed", tag=k, ready_marker=b"hello")
            for k in range(args.subscribers)
        ]
        fleet = Fleet(specs, workers=args.workers, ready_timeout=60)
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, fleet.start)
        if ready.failed:
            fleet.close()
            raise SystemExit(f"floor: only {ready.subscribed}/{args.subscribers} connected")
        async with connect(f"ws://127.0.0.1:{port}/publish", compression=None) as publisher:

            async def publish(i: int, stamp: float) -> None:
                await publisher.send(json.dumps({"t": stamp, "i": i}))
                await publisher.recv()

            for _ in range(3):
                await publisher.send("{}")
                await publisher.recv()
            await _publish(publish, args)
        total = int(args.rate * args.duration)
        await _wait_for(fleet, total * args.subscribers, lambda: True)
        records = await loop.run_in_executor(None, fleet.collect)
        fleet.close()
        ms = [(received - stamp) * 1000 for _tag, _i, stamp, received in records]
        print(f"floor: deliveries {len(ms)}/{total * args.subscribers}")
        print(f"floor publish->receipt latency ms:                 {_summary(ms)}")
        return ms
    finally:
        _stop(server)


# -- phase 2: supabase_local -----------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    floor_ms = [] if args.skip_floor else await _floor(args)
    server = None
    url = args.url
    if url is None:
        server, url = _start_server(args.database_url, args.jwt_secret, args.plan)
    key = mint_token(secret=args.jwt_secret, role="service_role", expires_in=3600)
    secret_key = api_key_derive(prefix=SECRET_PREFIX, seed=args.jwt_secret)
    user_token = mint_token(
        secret=args.jwt_secret, role="authenticated", sub=str(uuid.uuid4()), expires_in=3600
    )
    private = args.mode == "private-broadcast"
    conn = await asyncpg.connect(args.database_url)
    if private:
        await conn.execute(
            f'DROP POLICY IF EXISTS "{POLICY}" ON realtime.messages;'
            f' CREATE POLICY "{POLICY}" ON realtime.messages FOR SELECT TO authenticated'
            f" USING (realtime.topic() = '{TOPIC.removeprefix('realtime:')}')"
        )
    try:
        # receipts: (stamp written into the message, receipt time), both time.time()
        official_lat: list[tuple[float, float]] = []
        official = await _official_clients(
            url, key, args.official, official_lat, mode=args.mode, user_token=user_token
        )
        raw_count = args.subscribers - args.official
        if private:
            config = {"broadcast": {"self": False}, "private": True}
            join_payload = {"config": config, "access_token": user_token}
            ready_marker, event_marker = b'"status":"ok"', b'"broadcast"'
        else:
            join_payload = {"config": {"postgres_changes": [BINDING]}}
            ready_marker, event_marker = b"Subscribed to PostgreSQL", b'"postgres_changes"'
        join = json.dumps(
            {"topic": TOPIC, "event": "phx_join", "ref": "1", "join_ref": "1",
             "payload": join_payload}
        )  # fmt: skip
        spec = ClientSpec(
            url=_ws_url(url, key), join=join, ready_marker=ready_marker, event_marker=event_marker
        )
        fleet = Fleet([spec] * raw_count, workers=args.workers, ready_timeout=60)
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, fleet.start)
        if ready.failed:
            fleet.close()
            raise SystemExit(f"only {ready.subscribed}/{raw_count} joined: {ready.failures}")
        print(
            f"{args.subscribers} subscribers joined {args.mode} on {TOPIC} "
            f"({raw_count} raw vsn 1.0.0 over {args.workers} processes, "
            f"{args.official} official Python clients; plan {args.plan})"
        )

        base = int(time.time() * 1000) * 1000

        async def publish(i: int, stamp: float) -> None:
            payload = json.dumps({"t": stamp, "i": i})
            if private:
                await conn.execute(SEND, payload)
            else:
                checksum = hashlib.sha256(payload.encode()).hexdigest()
                await conn.execute(INSERT, base + i, payload, checksum)

        # Warm-up messages carry no stamp: the first one pays for cold caches.
        for i in range(3):
            if private:
                await conn.execute(SEND, "{}")
            else:
                await conn.execute(INSERT, base - 10 + i, "{}", "0" * 64)
        await asyncio.sleep(1.0)
        counted_before = prometheus_metrics(url, secret_key).get(
            "supabase_local_realtime_messages_total", 0
        )
        cpu_before = _cpu_seconds(server.pid) if server is not None else None
        started = time.monotonic()
        committed = await _publish(publish, args)
        total = len(committed)
        await _wait_for(
            fleet, total * raw_count, lambda: len(official_lat) >= total * args.official
        )
        elapsed = time.monotonic() - started
        cpu_after = _cpu_seconds(server.pid) if server is not None else None
        counted = prometheus_metrics(url, secret_key)
        records = await loop.run_in_executor(None, fleet.collect)
        fleet.close()
        latencies = [(stamp, received) for _tag, _index, stamp, received in records]
        if not private:
            await conn.execute(
                "DELETE FROM public.monitoring_events WHERE seq >= $1 AND seq < $2",
                base - 10,
                base + total,
            )
        for client in official:
            with contextlib.suppress(Exception):
                await client.close()

        every = latencies + official_lat
        expected = total * args.subscribers
        ms = [(recv - stamp) * 1000 for stamp, recv in every]
        # After the commit was acknowledged to the publisher: the server's own share.
        after = [(recv - committed[stamp]) * 1000 for stamp, recv in every if stamp in committed]
        commit_ms = [(done - stamp) * 1000 for stamp, done in committed.items()]
        oms = [(recv - stamp) * 1000 for stamp, recv in official_lat]
        print(f"messages published: {total} at {args.rate}/s; deliveries: {len(every)}/{expected}")
        print(f"supabase_local publish->receipt latency ms:        {_summary(ms)}")
        if floor_ms:
            ratio = _pct(ms, 95) / _pct(floor_ms, 95)
            print(f"p95 as a multiple of the floor's p95:              {ratio:.2f}")
        print(f"commit-ack->receipt latency ms:                    {_summary(after)}")
        print(f"publisher's statement + commit round trip ms:      {_summary(commit_ms)}")
        if oms:
            print(f"official clients only, publish->receipt ms:        {_summary(oms)}")
        if cpu_before is not None and cpu_after is not None:
            user = (cpu_after[0] - cpu_before[0]) / total * 1000
            system = (cpu_after[1] - cpu_before[1]) / total * 1000
            print(
                f"server CPU per message (all threads, whole pipeline): {user + system:.1f} ms"
                f" (user {user:.1f}, kernel {system:.1f}) for {args.subscribers} subscribers"
            )
        messages = counted.get("supabase_local_realtime_messages_total", 0) - counted_before
        refusals = sum(v for k, v in counted.items() if "realtime_refusals" in k)
        limit = counted.get('supabase_local_realtime_limit{name="max_events_per_second"}')
        print(
            f"messages counted by the server: {messages:.0f} in {elapsed:.1f} s = "
            f"{messages / elapsed:.0f}/s (quota average at the end "
            f"{counted.get('supabase_local_realtime_messages_per_second', 0):.0f}/s; plan limit "
            f"{f'{limit:.0f}/s' if limit else 'none'}; refusals "
            f"{refusals:.0f})"
        )
        ok = len(every) == expected and _pct(ms, 95) <= args.target_p95_ms
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at the end (1, 5, 15 min): {load}  [{os.cpu_count()} CPUs]")
        verdict = "met" if ok else "NOT met"
        print(f"target p95 <= {args.target_p95_ms:.0f} ms and nothing lost: {verdict}")
        return 0 if ok else 1
    finally:
        if private:
            await conn.execute(f'DROP POLICY IF EXISTS "{POLICY}" ON realtime.messages')
        await conn.close()
        if server is not None:
            _stop(server)


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
    parser.add_argument(
        "--mode", choices=("private-broadcast", "postgres-changes"), default="private-broadcast"
    )
    parser.add_argument("--plan", default="unlimited", help="supabase_local's --plan")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--official", type=int, default=3, help="official Python clients")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--skip-floor", action="store_true", help="no floor phase (no ratio)")
    parser.add_argument("--target-p95-ms", type=float, default=50.0)
    args = parser.parse_args()
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
