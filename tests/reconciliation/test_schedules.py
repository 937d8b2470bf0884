"""The scheduled runs: hourly over what is new since the last clean hourly run, and a
rolling re-check of older ranges. Tasks take no state but ids and call the services."""

import pytest

from reconciliation.models import RunStatus, RunTrigger
from reconciliation.services import reconciliation_run_hourly, reconciliation_run_recheck
from reconciliation.tasks import repair_task, run_hourly_task, run_recheck_task

pytestmark = pytest.mark.django_db


def test_the_hourly_run_covers_what_is_new_since_the_last_clean_one(log):
    first = log.publish(50)
    log.mirror()
    assert run_hourly_task()["status"] == RunStatus.CLEAN

    second = log.publish(30)
    log.mirror()
    run = reconciliation_run_hourly()

    assert run.trigger == RunTrigger.HOURLY
    assert (run.from_seq, run.to_seq) == (first[-1] + 1, second[-1])
    assert run.events_judged == 30


def test_after_a_dirty_hourly_run_the_next_one_starts_again_from_the_last_clean_one(log):
    first = log.publish(20)
    log.mirror()
    reconciliation_run_hourly()
    second = log.publish(20)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", second[3])
    dirty = reconciliation_run_hourly()
    assert dirty.status == RunStatus.DISCREPANCIES

    repair_task(dirty.pk)
    again = reconciliation_run_hourly()

    assert (again.from_seq, again.status) == (first[-1] + 1, RunStatus.CLEAN)


def test_the_recheck_rolls_over_older_ranges_and_wraps(log, settings):
    settings.RECONCILIATION_RECHECK_ROWS = 40
    seqs = log.publish(100)
    log.mirror()
    reconciliation_run_hourly()  # everything up to seq 100 has been checked once
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[50])

    ranges = []
    for _ in range(4):
        summary = run_recheck_task()
        ranges.append((summary["from_seq"], summary["to_seq"], summary["discrepancies"]))

    assert ranges == [(1, 40, 0), (41, 80, 1), (81, 100, 0), (1, 40, 0)]


def test_the_recheck_before_any_hourly_run_starts_at_the_beginning(log, settings):
    settings.RECONCILIATION_RECHECK_ROWS = 10
    log.publish(30)
    log.mirror()

    run = reconciliation_run_recheck()

    assert (run.from_seq, run.to_seq, run.trigger) == (1, 10, RunTrigger.RECHECK)
