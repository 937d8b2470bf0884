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

``--py-spy PATH`` also records the server with py-spy (a flame graph SVG at PATH).
Redis database 5 (BENCH_PUBLISH_REDIS_URL) is flushed at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
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

REDIS_URL = os.environ.get("BENCH_PUBLISH_REDIS_URL", "redis://127.0.0.1:6379/5")


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


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
    parser.add_argument("--py-spy", type=Path, help="record the server; flame graph here")
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
        "SUPABASE_URL": "",
        "SUPABASE_SERVICE_ROLE_KEY": "",
        "SUPABASE_ANON_KEY": "",
        "SUPABASE_JWT_SECRET": "",
    }
    print(f"load average at start: {load()}")
    latencies: list[float] = []
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
                env.update(
                    SUPABASE_URL=supabase.url,
                    SUPABASE_ANON_KEY=supabase.anon_key,
                    SUPABASE_SERVICE_ROLE_KEY=supabase.service_role_key,
                    SUPABASE_JWT_SECRET=supabase.jwt_secret,
                )
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
                with httpx.Client(base_url=base, headers=headers, timeout=30) as client:

                    def post(i: int) -> float:
                        body = {"event_type": "bench.publish", "source": "b", "payload": {"i": i}}
                        started = time.perf_counter()
                        response = client.post("/api/events", json=body)
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        return elapsed

                    for i in range(args.warmup):
                        post(i)
                    if args.py_spy:
                        spy = subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                             str(server.pid), "-o", str(args.py_spy), "--rate", "500",
                             "--nonblocking", "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        time.sleep(1)
                    latencies = [post(i) * 1000 for i in range(args.requests)]
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
