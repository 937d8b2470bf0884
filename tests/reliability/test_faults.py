"""The promises under faults: while a producer publishes steadily and clients follow both
transports, each fault below is injected; afterwards every event is in the local log and
in Supabase, every client has every event exactly once, and a reconciliation run is clean.

Each test prints what it injected and what it counted (``pytest -s`` shows it).
"""

import signal
import time

import pytest

from events.models import BreakerStateChange
from tests.fixtures.django_processes import worker_holds_delivery_locks
from tests.reliability.harness import Scenario

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(420),
]


def test_supabase_rest_failing_for_60_seconds(scenario: Scenario):
    scenario.start()
    scenario.inject("Supabase REST answers 503 to every request for 60 s")
    scenario.supabase.set_faults(rest_error_rate=1.0, rest_error_status=503)
    time.sleep(60)
    scenario.supabase.clear_faults()
    scenario.inject("Supabase REST answers again")
    cleared = time.monotonic()

    scenario.verify(catch_up_timeout=120)
    recovered = time.monotonic() - cleared
    scenario.say(f"recovery: Supabase complete {recovered:.1f} s after the fault ended")
    changes = list(BreakerStateChange.objects.order_by("at").values_list("old_state", "new_state"))
    scenario.say(f"breaker state changes: {changes}")
    assert ("closed", "open") in changes
    assert changes[-1][1] == "closed"


def test_realtime_dropping_every_connection(scenario: Scenario):
    scenario.start()
    for round_number in range(1, 4):
        scenario.inject(f"supabase_local closes every Realtime connection (round {round_number})")
        scenario.supabase.close_realtime_connections()
        time.sleep(4)
    scenario.verify()
    for follower in scenario.followers_of("supabase"):
        assert follower.connections >= 4, f"{follower.name} rejoined after every drop"


def test_redis_restarted(scenario: Scenario):
    scenario.start()
    scenario.inject("Redis stopped (SIGTERM, nothing persisted)")
    scenario.stack.stop("redis")
    time.sleep(3)
    scenario.stack.start_redis()
    scenario.inject("Redis started again, empty")
    time.sleep(5)
    scenario.verify()


def test_celery_worker_killed(scenario: Scenario):
    scenario.start()
    # Slow writes keep the worker inside a batch transaction, so the kill lands mid-batch.
    scenario.supabase.set_faults(rest_latency_ms=1500)
    scenario.wait(worker_holds_delivery_locks, 30, "the worker to be inside a sink batch")
    scenario.inject("Celery worker SIGKILLed inside a sink batch (Supabase writes slowed to 1.5 s)")
    scenario.stack.stop("worker", signal.SIGKILL)
    time.sleep(3)
    scenario.supabase.clear_faults()
    scenario.stack.start_worker()
    scenario.inject("Celery worker started again")
    scenario.verify()


def test_daphne_restarted(scenario: Scenario):
    scenario.start()
    scenario.inject("daphne stopped (SIGTERM)")
    scenario.stack.stop("daphne")
    time.sleep(2)
    scenario.stack.start_daphne()
    scenario.inject("daphne started again on the same port")
    time.sleep(3)
    scenario.verify()
    for follower in scenario.followers_of("websocket"):
        assert follower.connections >= 2, f"{follower.name} reconnected"
    assert scenario.publisher.retries > 0, "the producer saw the restart and retried"


def test_a_client_offline_for_30_seconds(scenario: Scenario):
    scenario.start()
    away = [scenario.followers_of("websocket")[0], scenario.followers_of("supabase")[0]]
    scenario.inject(f"{' and '.join(f.name for f in away)} offline for 30 s")
    for follower in away:
        scenario.set_online(follower, False)
    time.sleep(30)
    for follower in away:
        scenario.set_online(follower, True)
    scenario.inject("both back online")
    scenario.verify()
    for follower in away:
        assert follower.connections >= 2, f"{follower.name} reconnected"
