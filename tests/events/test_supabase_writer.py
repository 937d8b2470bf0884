"""The in-process writer: an event leaves for Supabase as soon as it commits, in the
process that published it, with no Celery worker running; the Celery flush stays queued
as the safety net."""

import time

import pytest
import redis

from events.models import Delivery
from events.services import event_publish_batch
from events.supabase_sink import supabase_breaker
from tests.fixtures.integrity import assert_supabase_copy_matches_log, supabase_deliveries_sent

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_for(check, *, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _publish(count: int) -> list[int]:
    events = [{"event_type": "tool.call", "source": "w", "payload": {"i": i}} for i in range(count)]
    return [result.seq for result in event_publish_batch(events=events)]


def test_a_committed_event_is_written_by_the_publishing_process_itself(django_supabase, settings):
    settings.SUPABASE_SINK_IN_PROCESS = True
    supabase_breaker().close()
    queue = redis.Redis.from_url(settings.REDIS_URL)
    queue.delete("celery", f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued")

    seqs = _publish(5)

    # No worker runs in this test: only the writer thread can have sent them.
    assert _wait_for(lambda: supabase_deliveries_sent(seqs))
    assert_supabase_copy_matches_log(django_supabase, seqs=seqs)
    # The safety net is queued all the same (it will find nothing left to do).
    assert queue.llen("celery") == 1


def test_one_wake_writes_a_backlog_larger_than_a_batch(django_supabase, settings):
    # The writer stops after a flush that took less than a full batch; a full one means
    # more may be waiting, so it goes on without another wake.
    settings.SUPABASE_SINK_IN_PROCESS = True
    settings.SUPABASE_SINK_BATCH_SIZE = 4
    supabase_breaker().close()

    seqs = _publish(10)

    assert _wait_for(lambda: supabase_deliveries_sent(seqs))
    assert_supabase_copy_matches_log(django_supabase, seqs=seqs)


def test_without_the_writer_nothing_is_sent_until_a_worker_flushes(django_supabase, settings):
    settings.SUPABASE_SINK_IN_PROCESS = False
    redis.Redis.from_url(settings.REDIS_URL).delete(
        f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued"
    )

    [published] = event_publish_batch(events=[{"event_type": "tool.call", "source": "w"}])
    time.sleep(0.5)

    assert Delivery.objects.get(event_id=published.seq, sink="supabase").status == "pending"


def test_a_started_writer_has_its_client_ready_before_the_first_event(django_supabase, settings):
    # What a server process does at start (monitor_project/asgi.py), with a writer of
    # its own: the process-wide one of this test run is already running.
    from events import supabase_client
    from events.supabase_writer import SupabaseWriter

    supabase_client._service_clients.clear()

    SupabaseWriter().start()

    config = supabase_client.supabase_settings()
    key = (config.url, config.server_key, config.timeout_seconds)
    assert _wait_for(lambda: key in supabase_client._service_clients)
