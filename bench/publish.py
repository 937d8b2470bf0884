"""The publisher's own round trip: `POST /api/events`, one event, sequential, no subscribers.

Starts a fresh database (on the machine's PostgreSQL, or BENCH_PG_URL), supabase_local on
its own database (so the Supabase sink is configured, as in production), and one ASGI
server process running the product. One client then posts single events one after the
other on one keep-alive connection, and the bench prints the round trip's percentiles
and where the server spent the milliseconds of each request (wall-clock spans measured
by ``bench/publish_probe.py`` around the functions on the path; nested spans are
indented and are included in the span above them).

    .venv/bin/python bench/publish.py [--requests 2000] [--server daphne|uvicorn]
        [--writer in-process|process] [--no-supabase] [--py-spy PATH]

``--writer process`` runs the Supabase writer as ``manage.py supabase_writer`` beside the
server instead of in it.

The client is a keep-alive ``http.client`` connection with the bodies encoded before the
clock starts. The bench also prints the machine's CPU per request (all cores, from
/proc/stat) and how it splits between the processes taking part: on two cores, what the
Supabase writer and supabase_local do after each event competes with the next request.

``--py-spy PATH`` also records the server with py-spy (a flame graph SVG at PATH, or
collapsed stacks when PATH ends in ``.txt``).
Redis database 5 (BENCH_PUBLISH_REDIS_URL) is flushed at the start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import drop_database, recreate_database  # noqa: E402  (the root comes first)
from tests.fixtures.django_processes import (  # noqa: E402
    SUPABASE_WRITERS,
    free_port,
    http_answers_ok,
    spawn_process,
    stop_process,
    supabase_writer_argv,
    supabase_writer_environment,
    wait_until,
)
from tests.fixtures.supabase_settings import (  # noqa: E402
    SUPABASE_KEY_SETTINGS,
    supabase_product_settings,
)

REDIS_URL = os.environ.get("BENCH_PUBLISH_REDIS_URL", "redis://127.0.0.1:6379/5")


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, every process), from /proc."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


ROLES = (
    ("server", "publish_probe.py"),
    ("Supabase writer", "supabase_writer"),
    ("supabase_local", "supabase_local"),
    ("PostgreSQL", "postgres"),
    ("Redis", "redis-server"),
)


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU time (user + system) of the processes taking part, by what they are."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys([role for role, _ in ROLES] + ["this client"], 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        if int(entry.name) == os.getpid():
            totals["this client"] += seconds
            continue
        for role, marker in ROLES:
            if marker in cmdline:
                totals[role] += seconds
                break
    return totals


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--no-supabase", action="store_true", help="Supabase sink unset")
    parser.add_argument(
        "--writer",
        choices=SUPABASE_WRITERS,
        default="in-process",
        help="the Supabase writer in the server (default) or `manage.py supabase_writer`",
    )
    parser.add_argument(
        "--py-spy", type=Path, help="record the server: a flame graph, or collapsed stacks (.txt)"
    )
    args = parser.parse_args()

    from tests.fixtures.supabase_local import running_supabase_local

    name = f"monitor_publish_{secrets.token_hex(4)}"
    database_url = recreate_database(name)
    redis.Redis.from_url(REDIS_URL).flushdb()
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / name
    logs.mkdir(parents=True, exist_ok=True)
    spans_path = logs / "spans.json"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "monitor_project.settings.base",
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "INGEST_RATE_PER_MINUTE": "1000000",
        "PUBLISH_PROBE_OUT": str(spans_path),
        **dict.fromkeys(SUPABASE_KEY_SETTINGS, ""),
    }
    print(f"load average at start: {load()}")
    latencies: list[float] = []
    busy_ms = 0.0
    roles_ms: dict[str, float] = {}
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
        )
        os.environ.update({k: v for k, v in env.items() if k != "PUBLISH_PROBE_OUT"})
        import django

        django.setup()
        from events.services import producer_create

        token = producer_create(name="bench").token
        from django.db import connections

        connections.close_all()
        with ExitStack() as stack:
            if not args.no_supabase:
                supabase = stack.enter_context(running_supabase_local(faults=False))
                # The keys of a project created today: publishable, secret, ES256 signing key.
                env.update(supabase_product_settings(supabase))
            if args.writer == "process":
                env.update(supabase_writer_environment(args.writer))
                writer = spawn_process(
                    supabase_writer_argv(), env=env, log_path=logs / "writer.log"
                )
                stack.callback(stop_process, writer)
            port = free_port()
            probe = str(REPO / "bench" / "publish_probe.py")
            argv = [sys.executable, probe, args.server, str(port)]
            server = spawn_process(argv, env=env, log_path=logs / "server.log")
            spy = None
            try:
                base = f"http://127.0.0.1:{port}"
                wait_until(
                    lambda: http_answers_ok(f"{base}/readyz"), timeout=60, interval=0.2,
                    what="server",
                )  # fmt: skip
                headers = {"Authorization": f"Bearer {token}"}
                headers["Content-Type"] = "application/json"
                # A plain keep-alive http.client connection, as bench/ingest.py: httpx
                # added ~1 ms to each round trip (p50 7.7 -> 6.7 ms on daphne, back to back),
                # its CPU taken from the two cores the server runs on.
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                stack.callback(client.close)

                def post(i: int) -> float:
                    body = json.dumps(
                        {"event_type": "bench.publish", "source": "b", "payload": {"i": i}}
                    ).encode()
                    started = time.perf_counter()
                    client.request("POST", "/api/events", body=body, headers=headers)
                    response = client.getresponse()
                    response.read()
                    elapsed = time.perf_counter() - started
                    if response.status != 201:
                        raise SystemExit(f"POST answered {response.status}")
                    return elapsed

                for i in range(args.warmup):
                    post(i)
                if args.py_spy:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                         str(server.pid), "-o", str(args.py_spy), "--rate", "500",
                         "--nonblocking", "--threads",
                         *(["--format", "raw"] if args.py_spy.suffix == ".txt" else [])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(1)
                busy_before, roles_before = machine_busy_seconds(), cpu_seconds_by_role()
                latencies = [post(i) * 1000 for i in range(args.requests)]
                busy_ms = (machine_busy_seconds() - busy_before) * 1000
                roles_ms = {
                    role: (seconds - roles_before[role]) * 1000
                    for role, seconds in cpu_seconds_by_role().items()
                }
            finally:
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=60)
                stop_process(server)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(name)

    ordered = sorted(latencies)
    print(
        f"POST /api/events, one event, sequential, {args.requests} requests "
        f"({args.warmup} warm-up), server {args.server}, Supabase sink "
        f"{'off' if args.no_supabase else 'on'}"
    )
    print(
        f"round trip ms: p50 {percentile(ordered, 50):.2f}  p95 {percentile(ordered, 95):.2f}  "
        f"p99 {percentile(ordered, 99):.2f}  mean {statistics.fmean(ordered):.2f}  "
        f"max {ordered[-1]:.2f}"
    )
    # Everything the machine did while the requests ran (the server, PostgreSQL, Redis, the
    # Supabase writer and supabase_local, this client), per request: what a request costs,
    # beside how long it waits for the two cores all of them share.
    count = max(1, len(latencies))
    print(
        f"machine CPU per request: {busy_ms / count:.2f} ms (all cores), of which "
        + ", ".join(f"{role} {ms / count:.2f}" for role, ms in roles_ms.items())
    )
    if spans_path.exists():
        # The last `requests` requests are the measured ones (warm-up first).
        measured = json.loads(spans_path.read_text())[-args.requests :]
        names = list(dict.fromkeys(name for request in measured for name in request))
        print(f"{'server span (ms per request; indented: part of the one above)':<64}"
              f"{'mean':>8}{'p50':>8}")  # fmt: skip
        for span in names:
            # A span missing from a request (e.g. no database connect) counts as 0 there.
            values = sorted(request.get(span, 0.0) * 1000 for request in measured)
            print(f"{span:<64}{statistics.fmean(values):>8.2f}{percentile(values, 50):>8.2f}")
    print(f"load average at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
