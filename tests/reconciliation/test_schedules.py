"""The scheduled runs: hourly over the whole log, incrementally (stored digests of sealed
chunks), and a rolling full pass over slices of it. Tasks take no state but ids and call
the services."""

import pytest

from reconciliation.models import ReconciliationRun, RunMode, RunStatus, RunTrigger
from reconciliation.services import reconciliation_run_hourly, reconciliation_run_recheck
from reconciliation.tasks import repair_task, run_hourly_task, run_recheck_task

pytestmark = pytest.mark.django_db


def test_the_hourly_run_covers_the_whole_log_incrementally(log):
    first = log.publish(50)
    log.mirror()
    assert run_hourly_task()["status"] == RunStatus.CLEAN

    second = log.publish(30)
    log.mirror()
    run = reconciliation_run_hourly()

    assert (run.trigger, run.mode) == (RunTrigger.HOURLY, RunMode.INCREMENTAL)
    assert (run.from_seq, run.to_seq) == (first[0], second[-1])
    assert run.events_judged == 80


def test_a_dirty_hourly_run_is_found_again_by_the_next_one_until_repaired(log):
    seqs = log.publish(40)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[3])
    dirty = reconciliation_run_hourly()
    assert dirty.status == RunStatus.DISCREPANCIES
    assert reconciliation_run_hourly().discrepancy_count == 1

    repair_task(dirty.pk)
    again = reconciliation_run_hourly()

    assert (again.from_seq, again.status) == (1, RunStatus.CLEAN)


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
    assert {run.mode for run in ReconciliationRun.objects.filter(trigger=RunTrigger.RECHECK)} == {
        RunMode.FULL
    }


def test_the_recheck_before_any_hourly_run_starts_at_the_beginning(log, settings):
    settings.RECONCILIATION_RECHECK_ROWS = 10
    log.publish(30)
    log.mirror()

    run = reconciliation_run_recheck()

    assert (run.from_seq, run.to_seq, run.trigger) == (1, 10, RunTrigger.RECHECK)
