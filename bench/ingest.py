"""Ingest throughput with the dual write on and off.

Starts everything it measures on this machine: a fresh PostgreSQL database (on the
machine's server, or BENCH_PG_URL), supabase_local on its own database, one daphne per CPU
(``--daphne``; each with its in-process Supabase writer when the sink is on, or with
``--writer process`` one ``manage.py supabase_writer`` beside them) and, for "sink on", a
Celery worker as the safety net. It prints events/s
  - through POST /api/events (batches over HTTP, several client threads on kept
    connections, bodies encoded before the clock starts), and
  - through event_publish_batch in this process,
with the Supabase sink off (SUPABASE_URL unset: deliveries wait as pending) and on, the
on/off ratio, how long after the last POST Supabase held every HTTP event and in how many
upserts, and the CPU each part of the run spent per 1,000 HTTP events (daphne, the worker,
supabase_local, the clients, the run's PostgreSQL backends by database, the backends that
exited, Redis) with the connections opened per POST. ``--py-spy PATH`` records the first
daphne and supabase_local during the "on" run (PATH ending in .txt: collapsed stacks).

    .venv/bin/python bench/ingest.py [--events 20000] [--batch 100] [--clients 4]
        [--writer in-process|process]
"""

import argparse
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.django_processes import (  # noqa: E402  (the repository root comes first)
    SUPABASE_WRITERS,
    celery_worker_argv,
    daphne_argv,
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

PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")


def recreate_database(name: str) -> str:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_http(url: str, seconds: float = 60) -> None:
    wait_until(lambda: http_answers_ok(url), timeout=seconds, interval=0.2, what=url)


def http_ingest(bases: list[str], token: str, *, events: int, batch: int, clients: int) -> float:
    # Encoded before the clock starts: the clients share the two cores with the server, so
    # what they spend per request is taken from what is measured.
    bodies = [
        json.dumps(
            {
                "events": [
                    {
                        "event_type": "http.latency",
                        "source": f"bench-{c}",
                        "payload": {"endpoint": "/v1/orders", "p95_ms": 12.5, "i": i},
                    }
                    for i in range(batch)
                ]
            }
        ).encode()
        for c in range(events // batch)
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(number: int, chunk: list[bytes]) -> None:
        # http.client on one kept connection: lighter than httpx, and what the clients
        # spend is taken from the server (the "bench clients" line of the CPU table).
        address = urlsplit(bases[number % len(bases)])
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            for body in chunk:
                connection.request("POST", "/api/events", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 201:
                    raise RuntimeError(f"POST /api/events: {response.status} {answer[:200]!r}")
        finally:
            connection.close()

    chunks = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(clients), chunks))
    return len(bodies) * batch / (time.perf_counter() - started)


def inprocess_ingest(*, events: int, batch: int) -> float:
    from django.db import connection

    from events.services import event_publish_batch

    payload = {"endpoint": "/v1/orders", "p95_ms": 12.5}
    started = time.perf_counter()
    for _ in range(events // batch):
        event_publish_batch(
            events=[{"event_type": "http.latency", "source": "bench", "payload": payload}] * batch
        )
    rate = (events // batch) * batch / (time.perf_counter() - started)
    connection.close()
    return rate


def _stat_seconds(pid: int, first: int) -> float:
    """Two adjacent clock-tick fields of /proc/PID/stat (after the command), in seconds;
    0 once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    return _stat_seconds(pid, 11)


def _cmdlines() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
    return {pid: line.decode(errors="replace") for pid, line in found.items()}


def _children_cpu_seconds(pid: int) -> float:
    """User + system CPU of the exited children a process has waited for."""
    return _stat_seconds(pid, 13)


def cpu_by_part(parts: dict[str, list[int]], databases: dict[str, str]) -> dict[str, float]:
    """CPU seconds so far of each part of the run: the given processes, and the PostgreSQL
    backends serving the run's databases (those alive now: the writers' and
    supabase_local's; a request's backend exits with its connection)."""
    seconds = {name: sum(_process_cpu_seconds(pid) for pid in pids) for name, pids in parts.items()}
    lines = _cmdlines()
    for label, database in databases.items():
        seconds[f"postgres: {label}"] = sum(
            _process_cpu_seconds(pid)
            for pid, line in lines.items()
            if line.startswith("postgres:") and f" {database} " in line
        )
    # Backends that exited (Django's connection per request) are counted in their parent,
    # the postmaster, with every other session's on this server.
    postmaster = min(
        (pid for pid, line in lines.items() if line.split(" ", 1)[0].endswith("/postgres")),
        default=None,
    )
    seconds["postgres: exited (server-wide)"] = (
        _children_cpu_seconds(postmaster) if postmaster else 0.0
    )
    seconds["redis-server (shared)"] = sum(
        _process_cpu_seconds(pid) for pid, line in lines.items() if line.startswith("redis-server")
    )
    return seconds


def supabase_local_pids(url: str) -> list[int]:
    port = url.rsplit(":", 1)[1]
    return [
        pid
        for pid, line in _cmdlines().items()
        if "-m supabase_local" in line and f"--port {port} " in line
    ]


def database_sessions(name: str) -> int:
    """Sessions (connections) the server has opened on database ``name`` so far."""
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [name]
        ).fetchone()
    return int(row[0]) if row else 0


def supabase_writes() -> int:
    """Upserts that wrote the sent Supabase deliveries: each marks its rows with one
    sent_at."""
    from events.models import Delivery

    return (
        Delivery.objects.filter(sink="supabase", status="sent").values("sent_at").distinct().count()
    )


def pending_supabase() -> int:
    from events.models import Delivery

    return Delivery.objects.filter(sink="supabase", status__in=["pending", "failed"]).count()


def supabase_rows(supabase) -> int:
    return supabase.sql("SELECT count(*) AS n FROM monitoring_events")[0]["n"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--daphne", type=int, default=os.cpu_count() or 1, help="daphne processes (clients "
        "alternate between them, as behind a load balancer); default one per CPU",
    )  # fmt: skip
    parser.add_argument(
        "--writer", choices=SUPABASE_WRITERS, default="in-process",
        help="the Supabase writer: in each daphne (default) or `manage.py supabase_writer`",
    )  # fmt: skip
    parser.add_argument(
        "--py-spy", type=Path, help="flame graph of the first daphne (sink on), and of "
        "supabase_local beside it (PATH's name + '-supabase_local'); a PATH ending in .txt "
        "gets collapsed stacks instead (py-spy --format raw)",
    )  # fmt: skip
    args = parser.parse_args()

    from tests.fixtures.supabase_local import running_supabase_local

    name = f"monitor_bench_{secrets.token_hex(4)}"
    database_url = recreate_database(name)
    redis.Redis.from_url(REDIS_URL).flushdb()
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / name
    logs.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        # Another settings module (on PYTHONPATH) to try a setting without editing the repo.
        "DJANGO_SETTINGS_MODULE": os.environ.get(
            "BENCH_SETTINGS_MODULE", "monitor_project.settings.base"
        ),
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "INGEST_RATE_PER_MINUTE": "1000000",
        **dict.fromkeys(SUPABASE_KEY_SETTINGS, ""),
    }
    processes: list[subprocess.Popen] = []
    results: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    print(f"load average at start: {load()}")
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=base_env, check=True
        )
        os.environ.update(base_env)
        import django

        django.setup()
        from django.conf import settings

        from events.services import producer_create

        token = producer_create(name="bench").token
        with running_supabase_local(faults=False) as supabase:
            # The keys of a project created today: publishable, secret, ES256 signing key.
            on_env = {**base_env, **supabase_product_settings(supabase)}
            on_env.update(supabase_writer_environment(args.writer))
            # "on" first: events published with the sink off stay pending, and must not
            # become a backlog that the "on" run's writers drain while it is measured.
            for mode, env in (("on", on_env), ("off", base_env)):
                mode_processes = []
                bases = []
                for number in range(args.daphne):
                    port = free_port()
                    log_path = logs / f"daphne-{mode}-{number + 1}.log"
                    mode_processes.append(
                        spawn_process(daphne_argv(port), env=env, log_path=log_path)
                    )
                    bases.append(f"http://127.0.0.1:{port}")
                workers, writers = [], []
                if mode == "on":
                    # The safety net: the writers write almost everything.
                    worker_argv = celery_worker_argv(concurrency=1, loglevel="warning")
                    workers.append(
                        spawn_process(worker_argv, env=env, log_path=logs / "worker.log")
                    )
                    if args.writer == "process":
                        writers.append(
                            spawn_process(
                                supabase_writer_argv(), env=env, log_path=logs / "writer.log"
                            )
                        )
                mode_processes += workers + writers
                processes.extend(mode_processes)
                for key in SUPABASE_KEY_SETTINGS:
                    setattr(settings, key, env[key])
                # This process's own publishes (event_publish_batch below) follow the mode too.
                settings.SUPABASE_SINK_IN_PROCESS = env.get("SUPABASE_SINK_IN_PROCESS") != "false"
                settings.SUPABASE_WRITER_PROCESS = env.get("SUPABASE_WRITER_PROCESS") == "true"
                for base in bases:
                    wait_http(f"{base}/readyz")
                spies = []
                if mode == "on" and args.py_spy:
                    raw = ["--format", "raw"] if args.py_spy.suffix == ".txt" else []
                    supabase_path = args.py_spy.with_stem(f"{args.py_spy.stem}-supabase_local")
                    for pid, path in (
                        (mode_processes[0].pid, args.py_spy),
                        *((pid, supabase_path) for pid in supabase_local_pids(supabase.url)),
                    ):
                        spies.append(subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                             str(pid), "-o", str(path), "--rate", "200", "--nonblocking", *raw],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        ))  # fmt: skip
                    time.sleep(1)
                parts = {
                    "daphne": [p.pid for p in mode_processes[: args.daphne]],
                    "celery worker": [p.pid for p in workers],
                    **({"supabase writer": [p.pid for p in writers]} if writers else {}),
                    "supabase_local": supabase_local_pids(supabase.url),
                    "bench clients": [os.getpid()],
                }
                databases = {
                    "monitor db": name,
                    "supabase_local db": supabase.database_url.rsplit("/", 1)[1],
                }
                cpu_before = cpu_by_part(parts, databases)
                sessions_before = database_sessions(name)
                results[f"api_{mode}"] = http_ingest(
                    bases, token, events=args.events, batch=args.batch, clients=args.clients
                )
                last_post = time.perf_counter()
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                for spy in spies:
                    spy.wait(timeout=60)
                if mode == "on":
                    expected = (args.events // args.batch) * args.batch
                    deadline = time.monotonic() + 300
                    while supabase_rows(supabase) < expected and time.monotonic() < deadline:
                        time.sleep(0.05)
                    results["mirror_lag"] = time.perf_counter() - last_post
                cpu_after = cpu_by_part(parts, databases)
                cpu[mode] = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
                results[f"sessions_{mode}"] = database_sessions(name) - sessions_before
                if mode == "on":
                    results["mirrored_rows"] = supabase_rows(supabase)
                    results["upserts"] = supabase_writes()
                    results["http_rows"] = expected
                results[f"publish_{mode}"] = inprocess_ingest(events=args.events, batch=args.batch)
                if mode == "on":
                    deadline = time.monotonic() + 300
                    while pending_supabase() and time.monotonic() < deadline:
                        time.sleep(0.2)
                    results["left_pending"] = pending_supabase()
                for process in mode_processes:
                    stop_process(process)
    finally:
        for process in processes:
            stop_process(process)
        from django.db import connections

        connections.close_all()
        drop_database(name)

    print(
        f"ingest benchmark: {args.events} events per run, batches of {args.batch}, "
        f"{args.clients} HTTP clients, {args.daphne} daphne process(es), Supabase writer "
        f"{args.writer}, {os.cpu_count()} cores"
    )
    print(f"{'path':<28}{'sink off':>12}{'sink on':>12}{'on/off':>9}")
    for path, label in (("api", "POST /api/events (HTTP)"), ("publish", "event_publish_batch")):
        off, on = results[f"{path}_off"], results[f"{path}_on"]
        print(f"{label:<28}{off:>10.0f}/s{on:>10.0f}/s{on / off:>9.2f}")
    print(
        f"mirror: Supabase held all {int(results['http_rows'])} HTTP events "
        f"({int(results['mirrored_rows'])} rows) {results['mirror_lag']:.1f} s after the last "
        f"POST was answered, in {int(results['upserts'])} upserts "
        f"({results['mirrored_rows'] / max(results['upserts'], 1):.0f} rows each on average); "
        f"{int(results['left_pending'])} deliveries left pending at the end"
    )
    http_events = (args.events // args.batch) * args.batch
    print(
        "CPU per 1,000 HTTP events, from the first POST until Supabase held them all (on) "
        "or the last POST (off), in ms:"
    )
    print(f"{'part':<28}{'sink off':>12}{'sink on':>12}")
    for part in cpu["on"]:
        off, on = (cpu[mode].get(part, 0.0) * 1e6 / http_events for mode in ("off", "on"))
        print(f"{part:<28}{off:>12.0f}{on:>12.0f}")
    requests = http_events // args.batch
    print(
        "PostgreSQL connections opened on the monitor database per POST: "
        f"{results['sessions_off'] / requests:.2f} (sink off), "
        f"{results['sessions_on'] / requests:.2f} (sink on)"
    )
    print(f"load average at end: {load()}")
    return 0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
