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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.fixtures.django_processes import (
    ProcessSet,
    celery_beat_argv,
    celery_worker_argv,
    child_database_url,
    daphne_argv,
    free_port,
    http_answers_ok,
)
from tests.fixtures.supabase_settings import supabase_product_settings

E2E_REDIS_DB = int(os.environ.get("ROLLOUT_E2E_REDIS_DB", "13"))


class Stack(ProcessSet):
    def __init__(self, supabase_local) -> None:
        base_redis = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
        self.redis_url = base_redis.rsplit("/", 1)[0] + f"/{E2E_REDIS_DB}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            log_dir=Path(tempfile.mkdtemp(prefix="rollout_e2e_")),
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "monitor_project.settings.test",
                "DATABASE_URL": child_database_url(),
                "TEST_REDIS_URL": self.redis_url,
                **supabase_product_settings(supabase_local),  # the new keys
                "SUPABASE_SINK_IN_PROCESS": "true",
                "PYTHONUNBUFFERED": "1",
            },
        )
        redis.Redis.from_url(self.redis_url).flushdb()

    def start_daphne(self) -> None:
        self.start("daphne", daphne_argv(self.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_alive()
            if http_answers_ok(f"{self.base_url}/healthz"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"daphne did not answer within 60 s:\n{self.logs()}")

    def start_worker(self) -> None:
        self.start("worker", celery_worker_argv(concurrency=2))

    def start_beat(self) -> None:
        self.start("beat", celery_beat_argv(schedule=self.log_dir / "beat-schedule"))

    def start_prober(self, *args: str) -> None:
        self.start(
            "prober",
            [sys.executable, "manage.py", "run_prober", "--base-url", self.base_url, *args],
        )


@contextlib.contextmanager
def running_stack(supabase_local) -> Iterator[Stack]:
    stack = Stack(supabase_local)
    try:
        yield stack
    finally:
        stack.stop_all()
