"""End to end, with real processes: a Realtime outage is detected by the prober and rolled
back by the beat-scheduled evaluation within 30 s, and an open legacy page is told to
switch.

supabase_local (the session fixture, with --faults), daphne on a free port, a Celery worker
(the Supabase sink's flushes, the evaluation, alert delivery), Celery beat (the seeded
15-second evaluation schedule, unchanged) and ``manage.py run_prober --interval 1
--loss-timeout 3`` all share the pytest-django test database. Times are printed for the
closing note; the only bound asserted is the issue's 30 s.
"""

import asyncio
import json
import threading
import time

import pytest
import websockets
from django.conf import settings
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from rollout import selectors, services
from rollout.models import HealthSample, RolloutState, Thresholds
from tests.rollout.factories import analysis_passing
from tests.rollout.stack import running_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]

WARM_UP_DELIVERIES = 20
ROLLBACK_BOUND_SECONDS = 30


class LegacyPage(threading.Thread):
    """A dashboard on the legacy path: a real WebSocket to daphne, signed in by cookie. It
    notes when the switch order arrives (``time.time()``, the same clock as the test)."""

    def __init__(self, *, base_url: str, session_key: str) -> None:
        super().__init__(daemon=True)
        self.url = base_url.replace("http://", "ws://") + "/ws/events/"
        self.origin = base_url
        self.cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}"
        self.ready = threading.Event()
        self.switched_at: float | None = None
        self.control: dict | None = None
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        async with websockets.connect(
            self.url, origin=self.origin, additional_headers={"Cookie": self.cookie}
        ) as socket:
            assert json.loads(await socket.recv())["type"] == "welcome"
            self.ready.set()
            while not self.stop_flag.is_set():
                try:
                    raw = await asyncio.wait_for(socket.recv(), 0.5)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                if message.get("type") == "control" and message.get("action") == "switch_transport":
                    self.switched_at = time.time()
                    self.control = message
                    return


def _wait(predicate, *, timeout: float, what: str, stack) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if predicate():
            return time.time()
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{stack.logs()}")


def _delivered(transport: str) -> int:
    return HealthSample.objects.filter(
        transport=transport, kind="delivery", value=1, origin="prober"
    ).count()


def _ensure_schedule() -> None:
    # The seed migration's rows (a flush between transaction tests may have removed them).
    every15, _ = IntervalSchedule.objects.get_or_create(every=15, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="rollout: evaluate health (rollback)",
        defaults={"task": "rollout.tasks.rollout_health_evaluate", "interval": every15,
                  "enabled": True, "expire_seconds": 15},
    )  # fmt: skip


def test_a_realtime_outage_is_rolled_back_and_the_legacy_page_told_to_switch(
    django_supabase, staff_user, user
):
    supabase_local = django_supabase
    supabase_local.clear_faults()
    _ensure_schedule()
    # This test is about the outage rules (error rate, connection failures). The latency
    # rule has its own tests (test_services.py); here it is set out of reach, because on
    # this shared 2-core machine the Supabase path's warm-up (first flush, first client)
    # and its extra Celery hop already put its p95 at ~3x the legacy p95 (printed below).
    Thresholds.objects.update_or_create(id=1, defaults={"latency_ratio_max": 100.0})
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="e2e rollout")
    browser = Client()
    browser.force_login(user)
    session_key = browser.cookies[settings.SESSION_COOKIE_NAME].value

    with running_stack(supabase_local) as stack:
        try:
            # given: the whole product running, the prober measuring both paths
            stack.start_daphne()
            stack.start_worker()
            # Probes sent before the worker can flush them would be "lost" by the sink's
            # cold start, not by Realtime.
            stack.wait_for_log("worker", "ready.", timeout=60)
            stack.start_beat()
            stack.start_prober("--interval", "1", "--loss-timeout", "3")
            _wait(
                lambda: _delivered("supabase") >= WARM_UP_DELIVERIES
                and _delivered("websocket") >= WARM_UP_DELIVERIES,
                timeout=120, what="the prober's warm-up deliveries on both paths", stack=stack,
            )  # fmt: skip
            assert not RolloutState.objects.get(id=1).killed, stack.logs()
            before = selectors.health_report()
            print(
                "\nE2E before the fault: supabase p95 "
                f"{before.supabase_long.p95_ms:.1f} ms, legacy p95 "
                f"{before.websocket_long.p95_ms:.1f} ms, supabase error rate "
                f"{before.supabase_short.error_rate:.1%}, breaches {before.breaches}"
            )
            assert not before.breaches, "the healthy stack already breaches a threshold"
            page = LegacyPage(base_url=stack.base_url, session_key=session_key)
            page.start()
            assert page.ready.wait(15) and page.error is None, page.error

            # when: Supabase Realtime stops delivering and drops every connection
            fault_start = time.time()
            supabase_local.set_faults(realtime_drop_rate=1.0)
            supabase_local.close_realtime_connections()

            # then: the kill switch is thrown within 30 s, and the legacy page hears it
            _wait(
                lambda: RolloutState.objects.get(id=1).killed,
                timeout=ROLLBACK_BOUND_SECONDS + 30, what="the kill switch", stack=stack,
            )  # fmt: skip
            state = RolloutState.objects.get(id=1)
            to_rollback = state.killed_at.timestamp() - fault_start
            page.join(timeout=15)
            assert page.switched_at is not None, f"no switch message\n{stack.logs()}"
            to_client = page.switched_at - fault_start
            print(
                f"\nE2E: fault start -> kill switch thrown {to_rollback:.2f} s; "
                f"-> legacy test client received switch_transport {to_client:.2f} s "
                f"(reason: {state.kill_reason})"
            )
            assert state.kill_reason.startswith("automatic rollback: Supabase error rate")
            assert page.control["transport"] == "websocket"
            assert to_rollback <= ROLLBACK_BOUND_SECONDS, stack.logs()
        finally:
            supabase_local.clear_faults()
