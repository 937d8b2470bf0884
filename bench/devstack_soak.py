"""A healthy dev stack, left alone, must not roll itself back (issue 14).

    .venv/bin/python bench/devstack_soak.py --minutes 15

Starts ``manage.py devstack`` in a fresh directory, as a fresh clone's ``make run`` does:
its own embedded PostgreSQL and Redis, supabase_local, daphne, Celery worker and beat,
the demo producer and the prober, on free ports. It leaves the stack alone and once a
minute prints what the rollback rules see: the prober's p95 per transport over the
latency window, the latency limit, and any rule breached. At the end it prints the
automatic rollbacks (kill switch thrown by the system), the breaches seen and the alerts
raised, stops the stack (as Ctrl-C does) and deletes the directory.

Exit 0 only when nothing was rolled back and no rule was breached (``--allow-breaches``:
breaches are reported but only a rollback fails the run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Settings a developer's shell may hold: the soak must run on the embedded defaults.
CLEARED = ("DATABASE_URL", "REDIS_URL", "TEST_REDIS_URL", "DJANGO_SETTINGS_MODULE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def wait_ready(launcher: subprocess.Popen, base_url: str, settings_file: Path) -> None:
    deadline = time.monotonic() + 300  # a first start runs initdb
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise SystemExit(f"the dev stack exited with {launcher.returncode}")
        if settings_file.exists():
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return
        time.sleep(1)
    raise SystemExit("the dev stack was not ready within 300 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--allow-breaches", action="store_true")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="monitor-soak-"))
    port, redis_port, supabase_port = free_port(), free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("SUPABASE_")
    }
    env["DEVSTACK_DIR"] = str(directory)
    argv = [sys.executable, "manage.py", "devstack", "--port", str(port), "--redis-port",
            str(redis_port), "--supabase-port", str(supabase_port)]  # fmt: skip
    log_path = directory / "launcher.log"
    with log_path.open("wb") as log:
        launcher = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = time.monotonic()
        wait_ready(launcher, f"http://127.0.0.1:{port}", directory / "settings.json")
        print(f"dev stack ready in {time.monotonic() - started:.0f} s ({directory})", flush=True)

        # This process reads the stack's database through the settings the stack shares.
        os.environ.update(DEVSTACK_DIR=str(directory),
                          DJANGO_SETTINGS_MODULE="monitor_project.settings.base")  # fmt: skip
        for name in CLEARED[:3]:
            os.environ.pop(name, None)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.db import connection

        from rollout.models import Alert, AuditAction, AuditEntry
        from rollout.selectors import health_report

        soak_started = time.time()
        breaches: dict[str, int] = {}
        for minute in range(1, int(args.minutes) + 1):
            time.sleep(60)
            if launcher.poll() is not None:
                raise SystemExit(f"the dev stack exited with {launcher.returncode}")
            report = health_report()
            for breach in report.breaches:
                breaches[f"{breach.source}: {breach.rule}"] = (
                    breaches.get(f"{breach.source}: {breach.rule}", 0) + 1
                )
            print(
                f"{minute:3d} min  prober p95 over {report.supabase_long.window_seconds} s: "
                f"supabase {fmt(report.supabase_long.p95_ms)} ms "
                f"({report.supabase_long.latency_samples} samples), legacy "
                f"{fmt(report.websocket_long.p95_ms)} ms "
                f"({report.websocket_long.latency_samples}); limit "
                f"{fmt(report.latency_limit_ms)} ms; supabase error rate "
                f"{fmt(report.supabase_short.error_rate_percent)} %; breaches: "
                f"{', '.join(b.message for b in report.breaches) or 'none'}",
                flush=True,
            )
            connection.close()

        rollbacks = AuditEntry.objects.filter(action=AuditAction.KILL, actor__isnull=True)
        alerts = Alert.objects.order_by("first_seen")
        print(f"\nafter {args.minutes:.0f} minutes:")
        print(f"  automatic rollbacks: {rollbacks.count()}")
        for entry in rollbacks:
            print(f"    {entry}")
        print(f"  minutes with a breach, by rule: {breaches or 'none'}")
        print(f"  alerts: {alerts.count()}")
        for alert in alerts:
            print(f"    {alert} — {alert.message[:120]}")
        print(f"  measured from {time.strftime('%H:%M', time.gmtime(soak_started))} UTC;"
              f" load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        healthy = not rollbacks.exists() and (args.allow_breaches or not breaches)
        print("verdict: " + ("healthy" if healthy else "NOT healthy"))
        return 0 if healthy else 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGINT)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
