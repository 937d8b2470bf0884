"""Real processes for the end-to-end tests: daphne, a Celery worker and beat, the prober.

All of them use the test settings pointed at the pytest-django test database (visible to
other processes in ``transaction=True`` tests), at the test supabase_local server, and at
their own Redis database (``E2E_REDIS_DB``, flushed at start) so that no other test run's
queued tasks or channel messages reach them. Each process runs in its own session; the
stack kills every process group it started, and keeps their logs for the failure report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from tests.fixtures.django_processes import child_database_url, daphne_argv, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_REDIS_DB = int(os.environ.get("ROLLOUT_E2E_REDIS_DB", "13"))


class Stack:
    def __init__(self, supabase_local) -> None:
        base_redis = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
        self.redis_url = base_redis.rsplit("/", 1)[0] + f"/{E2E_REDIS_DB}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="rollout_e2e_"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "monitor_project.settings.test",
            "DATABASE_URL": child_database_url(),
            "TEST_REDIS_URL": self.redis_url,
            "SUPABASE_URL": supabase_local.url,
            "SUPABASE_ANON_KEY": supabase_local.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": supabase_local.service_role_key,
            "SUPABASE_JWT_SECRET": supabase_local.jwt_secret,
            "PYTHONUNBUFFERED": "1",
        }
        redis.Redis.from_url(self.redis_url).flushdb()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.processes[name] = process
        return process

    def start_daphne(self) -> None:
        self.start("daphne", daphne_argv(self.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"daphne did not answer within 60 s:\n{self.logs()}")

    def start_worker(self) -> None:
        self.start(
            "worker",
            [sys.executable, "-m", "celery", "-A", "monitor_project", "worker",
             "--loglevel", "INFO", "--concurrency", "2", "--without-gossip", "--without-mingle"],
        )  # fmt: skip

    def start_beat(self) -> None:
        self.start(
            "beat",
            [sys.executable, "-m", "celery", "-A", "monitor_project", "beat", "--loglevel", "INFO",
             "--schedule", str(self.log_dir / "beat-schedule")],
        )  # fmt: skip

    def start_prober(self, *args: str) -> None:
        self.start(
            "prober",
            [sys.executable, "manage.py", "run_prober", "--base-url", self.base_url, *args],
        )

    def wait_for_log(self, name: str, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if text in (self.log_dir / f"{name}.log").read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not log {text!r} within {timeout} s:\n{self.logs()}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")

    def logs(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextlib.contextmanager
def running_stack(supabase_local) -> Iterator[Stack]:
    stack = Stack(supabase_local)
    try:
        yield stack
    finally:
        stack.stop()
