"""End-to-end delivery latency, publish call to subscriber, on both transports.

    .venv/bin/python bench/latency.py                      # 1,000 subscribers, 10/s, 30 s
    .venv/bin/python bench/latency.py --subscribers 100 --duration 10
    .venv/bin/python bench/latency.py --legacy 300 --supabase 700 --rate 20

Two phases, one after the other, with the same subscribers' count, events, rate,
duration and client code (``bench/wsload.py``, spread over worker processes):

1. floor: a bare broadcast server written with ``websockets`` (no Django, no database)
   in its own process. The publisher sends each event to it over a WebSocket; it calls
   ``websockets.broadcast`` to every client and then acknowledges to the publisher.
2. product: a fresh PostgreSQL database, supabase_local on its own database, daphne and
   a Celery worker (the Supabase sink), all started here and stopped at the end. The
   legacy share of the subscribers are ``/ws/events/`` clients signed in as distinct
   users (a session cookie each); the Supabase share join the private broadcast topic
   ``monitor:events`` with a user token each, as the dashboard does, and count the
   events of every broadcast message (one insert statement's rows share a message). The
   publisher POSTs each event to ``/api/events`` with a producer token; it reaches the
   legacy clients through the channel layer and the Supabase clients through the
   Celery sink's upsert, the database's broadcast trigger and supabase_local's Realtime:
   the real paths, measured as is. ``--plan team`` (or free, pro, pro-no-cap) starts
   supabase_local with that plan's Realtime quotas, which it enforces, and prints the
   messages per second it counted against the plan's limit and what it refused.

Every event's payload carries ``t`` (``time.time()`` just before the publish call) and
``i`` (its index); each client notes ``time.time()`` when the frame arrives, so latency is
receipt - t on one machine clock. Printed per transport: delivered / expected (unique
(subscriber, event) pairs / subscribers x events published), p50, p95, p99, max, p95
as a multiple of the floor's p95; the publisher's own latency; load averages. Written:
a JSON file and a PNG plot (latency CDF per transport). ``docs/latency.md`` explains it.

With ``--base-url`` it measures a product that is already running instead (see
``--help``); it then needs that product's database and Supabase settings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import drop_database, recreate_database  # noqa: E402  (the root comes first)
from bench.wsload import ClientSpec, Fleet  # noqa: E402
from monitor_project.asgi_servers import ASGI_SERVERS  # noqa: E402
from tests.fixtures.django_processes import (  # noqa: E402
    SUPABASE_WRITERS,
    celery_worker_argv,
    free_port,
    http_answers_ok,
    spawn_process,
    stop_process,
    supabase_writer_argv,
    supabase_writer_environment,
    wait_until,
    web_server_argv,
)

REDIS_URL = os.environ.get("BENCH_LATENCY_REDIS_URL", "redis://127.0.0.1:6379/4")
# "latency" is a performance keyword (events/migrations/0002_seed_routing.py), and the
# performance route goes to both sinks.
EVENT_TYPE = "bench.latency"
# The dashboard's own private topic (static/src/dashboard/supabase.js).
FEED_TOPIC = "realtime:monitor:events"
PLANS = ("unlimited", "free", "pro", "pro-no-cap", "team")
# The plans' broadcast payload limit in kB (../shared/SUPABASE-2026.md), for the trigger.
PLAN_PAYLOAD_KB = {"free": 256, "pro": 3000, "pro-no-cap": 3000, "team": 3000, "unlimited": 3000}
WARMUP_EVENTS = 3
PUBLISHER_THREADS = 32
TRANSPORTS = ("floor", "legacy", "supabase")
FLOOR_READY = "floor server ready"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(*fragments: str) -> int | None:
    """The process whose command line holds every fragment (e.g. a module and a port)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            words = [word.decode(errors="replace") for word in argv]
            if all(fragment in words for fragment in fragments):
                return int(entry.name)
    return None


class CpuMeter:
    """CPU used by named processes between start() and stop(), as seconds and % of a core."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def _sample(self) -> dict[str, float]:
        totals = {}
        for name, pids in self.groups.items():
            values = [cpu_seconds(pid) for pid in pids]
            totals[name] = sum(v for v in values if v is not None)
        return totals

    def start(self) -> None:
        self.before, self.began = self._sample(), time.monotonic()

    def stop(self) -> dict[str, dict]:
        after, wall = self._sample(), time.monotonic() - self.began
        return {
            name: {
                "cpu_seconds": round(after[name] - self.before[name], 2),
                "percent_of_one_core": round(100 * (after[name] - self.before[name]) / wall, 1),
                "wall_seconds": round(wall, 2),
            }
            for name in self.groups
        }


# -- publishing ----------------------------------------------------------------------------


@dataclass
class Published:
    stamps: dict[int, float] = field(default_factory=dict)  # index -> t
    publisher_ms: list[float] = field(default_factory=list)
    late: int = 0  # sends that started more than one interval behind the timetable
    seconds: float = 0.0  # from the first send to the last answer
    rate: float = 0.0  # sends started per second, as achieved
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, dict] = field(default_factory=dict)  # per process, over the window
    realtime: dict = field(default_factory=dict)  # supabase_local's own counts (/metrics)
    memory: dict = field(default_factory=dict)  # the server's RSS per connection


def event_body(index: int | None, stamp: float | None) -> dict:
    payload = {"warmup": True} if index is None else {"t": stamp, "i": index}
    return {"event_type": EVENT_TYPE, "source": "bench-latency", "payload": payload}


def publish_at_rate(send: Callable[[dict], object], *, rate: float, duration: float) -> Published:
    """Call ``send(body)`` on a fixed timetable, each call on a thread of a pool.

    Open loop: a slow answer does not hold back the next event, so a slow product shows
    as latency rather than as a lower rate. ``t`` is taken just before each call. A call
    that raises is counted as a publish error and its event is not expected.
    """
    result = Published()
    interval = 1.0 / rate
    total = int(rate * duration)
    starts: list[float] = []
    start = time.perf_counter()

    def publish(index: int) -> None:
        began = time.perf_counter()
        starts.append(began)
        if began - (start + index * interval) > interval:
            result.late += 1
        stamp = time.time()
        result.stamps[index] = stamp
        try:
            send(event_body(index, stamp))
        except Exception as exc:
            del result.stamps[index]
            result.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        result.publisher_ms.append((time.time() - stamp) * 1000)

    with ThreadPoolExecutor(PUBLISHER_THREADS) as pool:
        for index in range(total):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(publish, index)
    result.seconds = time.perf_counter() - start
    if len(starts) > 1:
        result.rate = (len(starts) - 1) / (max(starts) - min(starts))
    return result


# -- results -------------------------------------------------------------------------------


def pct(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def latency_stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50_ms": rounded(pct(ordered, 50)),
        "p95_ms": rounded(pct(ordered, 95)),
        "p99_ms": rounded(pct(ordered, 99)),
        "max_ms": rounded(ordered[-1] if ordered else None),
        "mean_ms": rounded(statistics.fmean(ordered) if ordered else None),
    }


@dataclass
class TransportRun:
    name: str
    subscribers: int
    tags: range
    connected: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def tally(run: TransportRun, records: list, published: Published, dropped: int) -> None:
    """Unique (subscriber, event) pairs, duplicates, and each pair's first-receipt latency."""
    first: dict[tuple[int, int], float] = {}
    duplicates = strays = 0
    for tag, index, _stamp, received in records:
        if tag not in run.tags:
            continue
        if index not in published.stamps:
            strays += 1
            continue
        key = (tag, index)
        if key in first:
            duplicates += 1
            first[key] = min(first[key], received)
        else:
            first[key] = received
    run.latencies_ms = [
        (received - published.stamps[i]) * 1000 for (_, i), received in first.items()
    ]
    expected = run.subscribers * len(published.stamps)
    run.summary = {
        "subscribers": run.subscribers,
        "connected": run.connected,
        "connect_failures": run.subscribers - run.connected,
        "failure_samples": run.failures[:5],
        "dropped_connections": dropped,
        "events_published": len(published.stamps),
        "expected": expected,
        "delivered": len(first),
        "missing": expected - len(first),
        "duplicates": duplicates,
        "unrecognised_frames": strays,
        **latency_stats(run.latencies_ms),
    }


def publisher_summary(published: Published, what: str) -> dict:
    return {
        "what": what,
        "events": len(published.stamps),
        "seconds": round(published.seconds, 3),
        "rate_achieved": round(published.rate, 3),
        "late_sends": published.late,
        "errors": len(published.errors),
        "error_samples": published.errors[:5],
        **latency_stats(published.publisher_ms),
    }


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes, summed (from /proc; 0 for a process gone)."""
    total = 0
    for pid in pids:
        with suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def measure(
    runs: list[TransportRun],
    specs: list[ClientSpec],
    *,
    args: argparse.Namespace,
    send: Callable[[dict], object],
    warm_up: Callable[[], None],
    watched: dict[str, list[int]],
    server_connections: Callable[[object], int],
) -> Published:
    """Connect the clients, warm up, publish on the timetable, wait for stragglers.

    ``watched`` names the server processes whose CPU use over the window is reported; the
    first entry is the WebSocket server (the floor server, or daphne) whose resident memory
    is sampled before the clients connect and once they have subscribed.
    ``server_connections(ready)`` says how many of the subscribed clients it holds.
    """
    # (none when measuring a product someone else started: its processes are unknown)
    server_name, server_pids = next(iter(watched.items()), (None, []))
    with Fleet(specs, workers=args.workers, ready_timeout=args.connect_timeout) as fleet:
        log(f"connecting {len(specs)} subscribers over {args.workers} processes")
        rss_before = rss_bytes(server_pids)
        ready = fleet.start()
        rss_after = rss_bytes(server_pids)
        subscribed = ready.subscribed
        log(f"{subscribed} subscribed, {ready.failed} failed {ready.failures[:3]}")
        if subscribed == 0:
            raise RuntimeError(f"no subscriber could connect: {ready.failures}")
        warm_up()
        fleet.reset()
        meter = CpuMeter(
            {
                **watched,
                "clients": [process.pid for process in fleet.processes],
                "publisher (this process)": [os.getpid()],
            }
        )
        meter.start()
        log(f"publishing {int(args.rate * args.duration)} events at {args.rate}/s")
        published = publish_at_rate(send, rate=args.rate, duration=args.duration)
        connections = server_connections(ready)
        published.memory = (
            {}
            if not server_pids
            else {
                "process": server_name,
                "processes": len(server_pids),
                "connections": connections,
                "rss_before_mb": round(rss_before / 2**20, 1),
                "rss_after_mb": round(rss_after / 2**20, 1),
                "kib_per_connection": (
                    round((rss_after - rss_before) / 1024 / connections, 1) if connections else None
                ),
            }
        )
        expected = subscribed * len(published.stamps)
        received = fleet.wait_for(expected, quiet_seconds=args.grace, limit=args.grace + 60)
        published.cpu = meter.stop()
        log(f"{received} stamped frames received (expected {expected} from those subscribed)")
        records = fleet.collect()
    for run in runs:
        run.connected = run.subscribers - sum(tag in run.tags for tag in ready.failed_tags)
        run.failures = ready.failures if run.connected < run.subscribers else []
        dropped = sum(tag in run.tags for tag in fleet.dropped)
        tally(run, records, published, dropped)
    return published


# -- floor ----------------------------------------------------------------------------------


def serve_floor(port: int) -> None:
    """The floor server: ``/feed`` clients get every message sent on ``/publish``."""
    import asyncio

    from websockets.asyncio.server import broadcast, serve

    clients: set = set()

    async def handler(connection) -> None:  # noqa: ANN001
        if connection.request.path == "/publish":
            async for message in connection:
                broadcast(clients, message)
                await connection.send("ok")
            return
        clients.add(connection)
        try:
            await connection.send("hello")
            await connection.wait_closed()
        finally:
            clients.discard(connection)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None) as server:
            print(FLOOR_READY, flush=True)
            await server.serve_forever()

    with suppress(ImportError):
        import uvloop

        uvloop.install()
    with suppress(KeyboardInterrupt):
        asyncio.run(main())


def run_floor(args: argparse.Namespace, logs: Path) -> tuple[TransportRun, Published]:
    from websockets.sync.client import connect

    port = free_port()
    server_log = logs / "floor.log"
    server = spawn_process(
        [sys.executable, __file__, "--serve-floor", str(port)], env=None, log_path=server_log
    )
    connections: list = []
    try:
        wait_until(
            lambda: FLOOR_READY in server_log.read_text() or server.poll() is not None,
            timeout=30,
            what="the floor server",
        )
        if server.poll() is not None:
            raise RuntimeError(f"the floor server exited: {server_log.read_text()[-2000:]}")
        total = args.legacy + args.supabase
        run = TransportRun("floor", total, range(total))
        specs = [
            ClientSpec(url=f"ws://127.0.0.1:{port}/feed", tag=k, ready_marker=b"hello")
            for k in range(total)
        ]
        local = threading.local()  # one publishing connection per publisher thread

        def send(body: dict) -> None:
            publisher = getattr(local, "connection", None)
            if publisher is None:
                publisher = connect(f"ws://127.0.0.1:{port}/publish", compression=None)
                local.connection = publisher
                connections.append(publisher)
            publisher.send(json.dumps(body))
            publisher.recv()  # the server's acknowledgement, after its broadcast

        def warm_up() -> None:
            for _ in range(WARMUP_EVENTS):
                send(event_body(None, None))
            time.sleep(1)

        published = measure(
            [run],
            specs,
            args=args,
            send=send,
            warm_up=warm_up,
            watched={"floor server": [server.pid]},
            server_connections=lambda ready: ready.subscribed,
        )
        return run, published
    finally:
        for publisher in connections:
            with suppress(Exception):
                publisher.close()
        stop_process(server)


# -- product ----------------------------------------------------------------------------------


@dataclass
class Product:
    base_urls: list[str]  # one per daphne process; clients and POSTs are spread over them
    supabase_url: str
    browser_key: str  # the publishable key (or a legacy anon key)
    processes: dict[str, list[int]] = field(default_factory=dict)  # name -> pids
    secret_key: str | None = None  # to read supabase_local's /metrics


def _django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


@contextmanager
def started_product(args: argparse.Namespace, logs: Path) -> Iterator[Product]:
    """A fresh database, supabase_local, daphne and a Celery worker; all gone on exit."""
    import redis

    from tests.fixtures.supabase_local import running_supabase_local
    from tests.fixtures.supabase_settings import supabase_product_settings

    name = f"monitor_latency_{secrets.token_hex(4)}"
    redis.Redis.from_url(REDIS_URL).flushdb()
    database_url = recreate_database(name)
    processes: list[subprocess.Popen] = []
    try:
        plan_args = ("--plan", args.plan)
        with running_supabase_local(faults=False, extra_args=plan_args) as supabase:
            # The trigger packs rows under the plan's payload limit.
            supabase.sql(
                "UPDATE public.monitoring_broadcast_settings SET max_payload_kb = %s",
                PLAN_PAYLOAD_KB[args.plan],
            )
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "DJANGO_SETTINGS_MODULE": "monitor_project.settings.base",
                "DJANGO_DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                # The keys of a project created today: publishable, secret, ES256.
                **supabase_product_settings(supabase),
                "SUPABASE_PLAN": args.plan,
                # Where the Supabase writer runs: in each web process, or in a process of
                # its own (docs/latency.md, "The Supabase writer in a process of its own").
                **supabase_writer_environment(args.writer),
                # The bench's Supabase clients send no telemetry: declare them, so the
                # sink's coalescing window counts them (docs/supabase.md, "Coalescing").
                "SUPABASE_EXTRA_SUBSCRIBERS": str(args.supabase),
                # The default (6,000/min per producer) would refuse rates above 100/s.
                "INGEST_RATE_PER_MINUTE": str(max(6000, int(args.rate * 120))),
            }
            log(f"database {name}; supabase_local on {supabase.url}; migrating")
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
            )
            base_urls = []
            for number in range(args.daphne):
                port = free_port()
                log_path = logs / f"{args.server}-{number + 1}.log"
                server_argv = web_server_argv(args.server, port)
                processes.append(spawn_process(server_argv, env=env, log_path=log_path))
                base_urls.append(f"http://127.0.0.1:{port}")
            worker_argv = celery_worker_argv(loglevel="warning")
            worker = spawn_process(worker_argv, env=env, log_path=logs / "worker.log")
            processes.append(worker)
            writer_pids = []
            if args.writer == "process":
                writer = spawn_process(
                    supabase_writer_argv(), env=env, log_path=logs / "supabase-writer.log"
                )
                processes.append(writer)
                writer_pids.append(writer.pid)
            for base_url in base_urls:
                wait_until(
                    lambda url=base_url: http_answers_ok(f"{url}/readyz"),
                    timeout=60,
                    interval=0.2,
                    what=args.server,
                )
            _django_setup(env)
            supabase_port = supabase.url.rsplit(":", 1)[1]
            supabase_pid = pid_of("supabase_local", "--port", supabase_port)
            yield Product(
                base_urls,
                supabase.url,
                supabase.publishable_key,
                secret_key=supabase.secret_key,
                processes={
                    args.server: [process.pid for process in processes[: args.daphne]],
                    "celery worker": [worker.pid],
                    **({"supabase writer": writer_pids} if writer_pids else {}),
                    "supabase_local": [supabase_pid] if supabase_pid else [],
                },
            )
    finally:
        for process in processes:
            stop_process(process)
        with suppress(Exception):
            from django.db import connections

            connections.close_all()
        drop_database(name)


@contextmanager
def running_product(args: argparse.Namespace) -> Iterator[Product]:
    """A product someone else started: its database and Supabase settings come from us."""
    if not os.environ.get("SUPABASE_URL") or not args.database_url:
        raise SystemExit("--base-url needs --database-url and that product's SUPABASE_* settings")
    _django_setup(
        {
            "DATABASE_URL": args.database_url,
            "DJANGO_SETTINGS_MODULE": os.environ.get(
                "DJANGO_SETTINGS_MODULE", "monitor_project.settings.base"
            ),
        }
    )
    from events import supabase_client

    if not supabase_client.user_tokens_available():
        raise SystemExit(
            "--base-url needs a browser key and a token signing key: SUPABASE_PUBLISHABLE_KEY"
            " and SUPABASE_JWT_SIGNING_KEY (or the legacy SUPABASE_ANON_KEY and"
            " SUPABASE_JWT_SECRET)"
        )
    yield Product(
        [args.base_url.rstrip("/")],
        os.environ["SUPABASE_URL"],
        supabase_client.browser_key(),
        secret_key=supabase_client.supabase_settings().server_key,
    )


@dataclass
class Identities:
    prefix: str
    producer_token: str
    session_keys: list[str]
    user_tokens: list[str]


def identities_create(*, legacy: int, supabase: int, token_seconds: int) -> Identities:
    """Distinct users: a session each for the legacy share, a user token each for the rest."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from events.services import producer_create
    from events.supabase_client import user_access_token_issue
    from rollout.services import session_backend_path

    prefix = f"bench-latency-{secrets.token_hex(4)}"
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [
            user_model(username=f"{prefix}-{k}", password=make_password(None))
            for k in range(legacy + supabase)
        ]
    )
    store = SessionStore()
    backend = session_backend_path()
    expires = timezone.now() + dt.timedelta(days=1)
    sessions = [
        Session(
            session_key=get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789"),
            session_data=store.encode(
                {
                    SESSION_KEY: str(user.pk),
                    BACKEND_SESSION_KEY: backend,
                    HASH_SESSION_KEY: user.get_session_auth_hash(),
                }
            ),
            expire_date=expires,
        )
        for user in users[:legacy]
    ]
    Session.objects.bulk_create(sessions)
    tokens = [
        user_access_token_issue(user_id=user.pk, expires_in=token_seconds)[0]
        for user in users[legacy:]
    ]
    producer_token = producer_create(name=prefix).token
    return Identities(prefix, producer_token, [s.session_key for s in sessions], tokens)


def identities_delete(identities: Identities) -> None:
    """Remove the users and sessions (the producer stays: its events refer to it)."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key__in=identities.session_keys).delete()
    get_user_model().objects.filter(username__startswith=f"{identities.prefix}-").delete()


def product_specs(product: Product, identities: Identities) -> list[ClientSpec]:
    specs = []
    for k, key in enumerate(identities.session_keys):
        # Spread over the daphne processes as a load balancer would.
        base_url = product.base_urls[k % len(product.base_urls)]
        specs.append(
            ClientSpec(
                url=f"{base_url.replace('http', 'ws', 1)}/ws/events/",
                tag=k,
                headers=(("Cookie", f"sessionid={key}"), ("Origin", base_url)),
                ready_marker=b'"welcome"',
                event_marker=b'"type": "event"',
            )
        )
    realtime = product.supabase_url.replace("http", "ws", 1).rstrip("/")
    url = f"{realtime}/realtime/v1/websocket?apikey={product.browser_key}&vsn=1.0.0"
    for k, token in enumerate(identities.user_tokens, start=len(specs)):
        join = {
            "topic": FEED_TOPIC,
            "event": "phx_join",
            "ref": "1",
            "join_ref": "1",
            "payload": {
                "config": {
                    "broadcast": {"ack": False, "self": False},
                    "presence": {"key": "", "enabled": False},
                    "postgres_changes": [],
                    "private": True,
                },
                "access_token": token,
            },
        }
        specs.append(
            ClientSpec(
                url=url,
                tag=k,
                join=json.dumps(join),
                # The join reply: {"event":"phx_reply","payload":{"response":…,"status":"ok"}}
                ready_marker=b'"status":"ok"',
                event_marker=b'"event":"events"',
                many_per_frame=True,
            )
        )
    return specs


def run_product(args: argparse.Namespace, logs: Path) -> tuple[list[TransportRun], Published]:
    import httpx

    context = running_product(args) if args.base_url else started_product(args, logs)
    with context as product:
        token_seconds = int(args.duration + args.connect_timeout + 600)
        identities = identities_create(
            legacy=args.legacy, supabase=args.supabase, token_seconds=token_seconds
        )
        try:
            legacy = TransportRun("legacy", args.legacy, range(args.legacy))
            supabase = TransportRun(
                "supabase", args.supabase, range(args.legacy, args.legacy + args.supabase)
            )
            headers = {"Authorization": f"Bearer {identities.producer_token}"}
            with ExitStack() as stack:
                clients = [
                    stack.enter_context(httpx.Client(base_url=url, headers=headers, timeout=30))
                    for url in product.base_urls
                ]
                turns = itertools.count()

                def send(body: dict) -> int:
                    client = clients[next(turns) % len(clients)]
                    response = client.post("/api/events", json=body)
                    response.raise_for_status()
                    return response.json()["seq"]

                def warm_up() -> None:
                    seqs = [send(event_body(None, None)) for _ in range(WARMUP_EVENTS)]
                    wait_mirrored(seqs, seconds=60)
                    time.sleep(1)

                before = realtime_metrics(product)
                published = measure(
                    [legacy, supabase],
                    product_specs(product, identities),
                    args=args,
                    send=send,
                    warm_up=warm_up,
                    watched=product.processes,
                    server_connections=lambda ready: sum(
                        tag not in ready.failed_tags for tag in legacy.tags
                    ),
                )
                published.realtime = realtime_counted(
                    before, realtime_metrics(product), plan=args.plan
                )
            return [legacy, supabase], published
        finally:
            identities_delete(identities)


def realtime_metrics(product: Product) -> tuple[float, dict[str, float]]:
    """supabase_local's ``GET /metrics`` now (empty when the product is not ours)."""
    from tests.fixtures.supabase_local import prometheus_metrics

    if product.secret_key is None:
        return time.monotonic(), {}
    try:
        return time.monotonic(), prometheus_metrics(product.supabase_url, product.secret_key)
    except Exception:  # a real project has no /metrics: nothing to report
        return time.monotonic(), {}


def realtime_counted(before, after, *, plan: str) -> dict:
    """Messages Realtime counted for its quota over the run, against the plan's limit."""
    (began, first), (ended, last) = before, after
    if not last:
        return {}
    prefix = "supabase_local_realtime_"
    refusals = {
        name[len(prefix) + len('refusals_total{reason="') : -2]: int(value - first.get(name, 0))
        for name, value in last.items()
        if name.startswith(f"{prefix}refusals_total") and value - first.get(name, 0)
    }
    messages = last.get(f"{prefix}messages_total", 0) - first.get(f"{prefix}messages_total", 0)
    limit = last.get(f'{prefix}limit{{name="max_events_per_second"}}')
    return {
        "plan": plan,
        "messages": int(messages),
        "messages_per_second": rounded(messages / max(ended - began, 1e-9)),
        "messages_per_second_limit": limit,
        "refusals": refusals,
    }


def wait_mirrored(seqs: list[int], *, seconds: float) -> None:
    """Until the Supabase sink has sent these events (the worker is up and writing)."""
    from events.models import Delivery

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Delivery.objects.filter(
            event_id__in=seqs, sink="supabase", status="sent"
        ).count() == len(seqs):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Supabase sink did not send the warm-up events within {seconds} s")


# -- output -------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    params = report["parameters"]
    table = Table(
        title=(
            f"delivery latency, publish call -> receipt (ms): {params['events_published']} events "
            f"at {params['rate']}/s over {params['duration']} s, {report['machine']['cpus']} CPUs"
        )
    )
    columns = ("transport", "subscribers", "delivered / expected", "p50", "p95", "p99", "max")
    for column in (*columns, "p95 / floor p95"):
        table.add_column(column, justify="left" if column == "transport" else "right")
    for name in TRANSPORTS:
        row = report["transports"].get(name)
        if row is None:
            continue
        subscribers = f"{row['connected']}/{row['subscribers']}"
        ratio = row.get("p95_vs_floor")
        table.add_row(
            name,
            subscribers,
            f"{row['delivered']} / {row['expected']}",
            fmt(row["p50_ms"]),
            fmt(row["p95_ms"]),
            fmt(row["p99_ms"]),
            fmt(row["max_ms"]),
            "-" if ratio is None else f"{ratio:.2f}x",
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    for name, row in report["transports"].items():
        counts = ("missing", "duplicates", "connect_failures", "dropped_connections")
        extra = [f"{row[k]} {k.replace('_', ' ')}" for k in counts if row[k]]
        if extra:
            console.print(f"{name}: {', '.join(extra)} {row['failure_samples'] or ''}")
    for name, pub in report["publisher"].items():
        console.print(
            f"publisher ({name}, {pub['what']}): p50 {fmt(pub['p50_ms'])}  p95 {fmt(pub['p95_ms'])}"
            f"  max {fmt(pub['max_ms'])} ms; {pub['rate_achieved']:.2f} events/s achieved,"
            f" {pub['late_sends']} sends started late, {pub['errors']} errors"
            f" {pub['error_samples'] or ''}"
        )
    for phase, usage in report["cpu"].items():
        parts = [
            f"{name} {u['cpu_seconds']:.1f} s ({u['percent_of_one_core']:.0f}%)"
            for name, u in usage.items()
        ]
        wall = next(iter(usage.values()))["wall_seconds"] if usage else 0
        console.print(
            f"CPU over the {phase} window ({wall:.0f} s, % of one core): {', '.join(parts)}"
        )
    for phase, mem in report.get("memory", {}).items():
        if mem and mem.get("kib_per_connection") is not None:
            console.print(
                f"memory ({phase}): {mem['process']} ({mem['processes']} process(es)) RSS "
                f"{mem['rss_before_mb']:.0f} MB before the clients, {mem['rss_after_mb']:.0f} MB "
                f"with {mem['connections']} connections: "
                f"{mem['kib_per_connection']:.0f} KiB per connection"
            )
    machine = report["machine"]
    console.print(
        f"load average (1, 5, 15 min) at start {machine['load_start']},"
        f" at end {machine['load_end']}"
    )
    counted = report.get("supabase_realtime") or {}
    if counted:
        limit = counted["messages_per_second_limit"]
        console.print(
            f"supabase_local ({counted['plan']} plan) counted {counted['messages']:,} messages"
            f" = {counted['messages_per_second']} /s over the window"
            f" (limit {f'{limit:,.0f}' if limit else 'none'});"
            f" refused: {counted['refusals'] or 'nothing'}"
        )
    target = params["target_p95_ms"]
    for name in ("legacy", "supabase"):
        row = report["transports"].get(name)
        if row and row["p95_ms"] is not None:
            met = row["p95_ms"] <= target and row["missing"] == 0
            verdict = "met" if met else "NOT met"
            console.print(f"{name}: p95 <= {target:.0f} ms with nothing missing: {verdict}")


def cdf_points(values: list[float], steps: int = 200) -> list[float | None]:
    ordered = sorted(values)
    return [rounded(pct(ordered, 100 * k / steps)) for k in range(steps + 1)]


def draw(runs: list[TransportRun], path: Path, *, target: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for run in runs:
        if not run.latencies_ms:
            continue
        ordered = sorted(run.latencies_ms)
        stride = max(1, len(ordered) // 4000)
        xs = ordered[::stride] + [ordered[-1]]
        expected = max(run.summary["expected"], 1)
        # Fraction of *expected* deliveries: a curve that ends below 1 shows what is missing.
        ys = [(k * stride + 1) / expected for k in range(len(xs) - 1)] + [len(ordered) / expected]
        p95 = run.summary["p95_ms"]
        ax.step(xs, ys, where="post", label=f"{run.name} (p95 {p95:.1f} ms)")
    ax.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"target p95 {target:g} ms")
    ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("publish call -> receipt (ms, log scale)")
    ax.set_ylabel("fraction of expected deliveries received")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally block stops what it started."""
    raise KeyboardInterrupt


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="total over both transports")
    parser.add_argument("--supabase-share", type=float, default=0.5)
    parser.add_argument("--legacy", type=int, help="legacy subscribers (overrides the share)")
    parser.add_argument("--supabase", type=int, help="Supabase subscribers (overrides the share)")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    parser.add_argument(
        "--grace", type=float, default=5.0, help="give up on stragglers after this many quiet s"
    )
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--target-p95-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "latency.json")
    parser.add_argument("--plot", type=Path, help="PNG path (default: --out with .png)")
    parser.add_argument("--skip-floor", action="store_true", help="no floor phase (no ratios)")
    parser.add_argument(
        "--daphne",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes to start (default: one per CPU, as deployed behind a load "
        "balancer); legacy clients and POSTs are spread over them",
    )
    parser.add_argument(
        "--writer",
        choices=SUPABASE_WRITERS,
        default="in-process",
        help="the Supabase writer: in each web process (the default) or `manage.py "
        "supabase_writer` in a process of its own",
    )
    parser.add_argument(
        "--server",
        choices=ASGI_SERVERS,
        default="daphne",
        help="the ASGI server the bench runs the product on (default: daphne, as deployed)",
    )
    parser.add_argument("--base-url", help="measure a running product (daphne) instead")
    parser.add_argument("--database-url", help="with --base-url: that product's database")
    parser.add_argument(
        "--plan",
        choices=PLANS,
        default="unlimited",
        help="the Supabase plan whose Realtime quotas supabase_local enforces (default: none)",
    )
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor is None:
        if args.legacy is None and args.supabase is None:
            args.supabase = round(args.subscribers * args.supabase_share)
            args.legacy = args.subscribers - args.supabase
        elif args.legacy is None:
            args.legacy = max(0, args.subscribers - args.supabase)
        elif args.supabase is None:
            args.supabase = max(0, args.subscribers - args.legacy)
        if args.legacy + args.supabase <= 0 or args.rate <= 0 or args.duration <= 0:
            parser.error("need some subscribers, a positive rate and a positive duration")
        args.plot = args.plot or args.out.with_suffix(".png")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor is not None:
        serve_floor(args.serve_floor)
        return 0
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with "&"
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"latency-{secrets.token_hex(3)}"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"logs in {logs}")
    started = dt.datetime.now(dt.UTC)
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: list[TransportRun] = []
    publisher: dict[str, dict] = {}
    cpu: dict[str, dict] = {}
    memory: dict[str, dict] = {}
    if not args.skip_floor:
        log("phase 1: floor (bare websockets broadcast server)")
        floor, floor_published = run_floor(args, logs)
        runs.append(floor)
        publisher["floor"] = publisher_summary(floor_published, "WebSocket send -> server ack")
        cpu["floor"] = floor_published.cpu
        memory["floor"] = floor_published.memory
    log("phase 2: product (POST /api/events -> legacy WebSocket and Supabase Realtime)")
    product_runs, product_published = run_product(args, logs)
    runs.extend(product_runs)
    publisher["product"] = publisher_summary(product_published, "POST /api/events round trip")
    cpu["product"] = product_published.cpu
    memory["product"] = product_published.memory
    load_end = [round(x, 2) for x in os.getloadavg()]

    floor_p95 = runs[0].summary["p95_ms"] if not args.skip_floor else None
    transports = {}
    for run in runs:
        p95 = run.summary["p95_ms"]
        ratio = rounded(p95 / floor_p95) if floor_p95 and p95 is not None else None
        transports[run.name] = {
            **run.summary,
            "p95_vs_floor": ratio,
            "cdf_ms": cdf_points(run.latencies_ms),
        }
    report = {
        "benchmark": "bench/latency.py",
        "timestamp": started.isoformat(timespec="seconds"),
        "parameters": {
            "legacy_subscribers": args.legacy,
            "supabase_subscribers": args.supabase,
            "floor_subscribers": 0 if args.skip_floor else args.legacy + args.supabase,
            "rate": args.rate,
            "duration": args.duration,
            "events_published": len(product_published.stamps),
            "grace_seconds": args.grace,
            "client_processes": args.workers,
            "target_p95_ms": args.target_p95_ms,
            "product": args.base_url or "started by the bench",
            "daphne_processes": None if args.base_url else args.daphne,
            "asgi_server": None if args.base_url else args.server,
            "supabase_writer": None if args.base_url else args.writer,
            "event_type": EVENT_TYPE,
        },
        "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_end": load_end},
        "transports": transports,
        "publisher": publisher,
        "cpu": cpu,
        "supabase_realtime": product_published.realtime,
        "memory": memory,
        "cdf_note": "cdf_ms[k] is the (k/2)th percentile of the delivered latencies, ms",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    total = args.legacy + args.supabase
    draw(
        runs,
        args.plot,
        target=args.target_p95_ms,
        title=(
            f"{total} subscribers ({args.legacy} legacy, {args.supabase} Supabase), "
            f"{args.rate:g} events/s for {args.duration:g} s - {started:%Y-%m-%d %H:%M} UTC"
        ),
    )
    print_report(report)
    log(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything this bench started has been stopped", file=sys.stderr)
        sys.exit(130)
