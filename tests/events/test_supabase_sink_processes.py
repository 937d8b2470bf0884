"""A Celery worker killed in the middle of a batch loses and duplicates nothing."""

import uuid

import pytest
import redis
from django.conf import settings

from events.models import Delivery
from events.services import event_publish_batch
from events.supabase_sink import supabase_breaker
from events.tasks import supabase_sink_drain_task, supabase_sink_flush_task
from tests.fixtures.django_processes import (
    celery_worker_argv,
    kill_process_group,
    process_environment,
    running_process,
    wait_until,
    worker_holds_delivery_locks,
)
from tests.fixtures.integrity import assert_supabase_copy_matches_log

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(django_supabase, tmp_path):
    supabase_breaker().close()
    # An empty queue and no "flush queued" flag left by earlier tests.
    redis.Redis.from_url(settings.REDIS_URL).delete(
        "celery", f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued"
    )
    # Every write hangs for 4 s, so the worker is caught inside its batch transaction.
    django_supabase.set_faults(rest_latency_ms=4000)
    try:
        seqs = [
            r.seq
            for r in event_publish_batch(
                events=[
                    {"event_type": "tool.call", "source": "w", "payload": {"i": i}}
                    for i in range(300)
                ]
            )
        ]
        # A queue of this test's own, so that no other worker can take the task.
        queue = f"test-kill-{uuid.uuid4().hex[:8]}"
        with running_process(
            [*celery_worker_argv(), "--queues", queue],
            env=process_environment(),
            log_path=tmp_path / "worker.log",
        ) as worker:
            supabase_sink_flush_task.apply_async(queue=queue)
            wait_until(worker_holds_delivery_locks, timeout=60, what="the worker to claim a batch")
            kill_process_group(worker)
            print(f"killed the worker (SIGKILL) while it held a batch of {len(seqs)} deliveries")
    finally:
        django_supabase.clear_faults()

    # The killed worker's transaction died with it: nothing was marked sent.
    assert not Delivery.objects.filter(event_id__in=seqs, sink="supabase", status="sent").exists()

    wait_until(lambda: not worker_holds_delivery_locks(), timeout=30, what="locks released")
    result = supabase_sink_drain_task()
    remote = django_supabase.sql("SELECT seq, checksum FROM monitoring_events ORDER BY seq")
    print(f"drain after the kill sent {result['sent']}; Supabase holds {len(remote)} rows")

    assert [row["seq"] for row in remote] == seqs
    assert_supabase_copy_matches_log(django_supabase)
    assert set(
        Delivery.objects.filter(event_id__in=seqs, sink="supabase").values_list("status", flat=True)
    ) == {"sent"}
