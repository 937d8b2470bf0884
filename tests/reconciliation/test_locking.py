"""Runs never overlap: one advisory lock for runs and repairs."""

import pytest

from reconciliation.models import ReconciliationRun, RunStatus
from reconciliation.services import (
    ADVISORY_LOCK_KEY,
    ReconciliationBusy,
    reconciliation_repair,
    reconciliation_run,
)
from tests.fixtures.database import other_connection
from tests.fixtures.threads import run_together


@pytest.mark.django_db
def test_a_run_started_while_another_holds_the_lock_is_skipped(log):
    log.publish(10)
    log.mirror()
    with other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])

        run = reconciliation_run()

        assert run.status == RunStatus.SKIPPED
        assert "in progress" in run.error and "skipped" in run.error
        assert run.discrepancies.count() == 0
        other.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])

    assert reconciliation_run().status == RunStatus.CLEAN


@pytest.mark.django_db
def test_a_repair_is_refused_while_a_run_holds_the_lock(log):
    seqs = log.publish(10)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[0])
    run = reconciliation_run()
    with other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        with pytest.raises(ReconciliationBusy):
            reconciliation_repair(run_id=run.pk)


@pytest.mark.django_db(transaction=True)
def test_two_runs_started_together_do_not_overlap(log):
    log.publish(2000)
    log.mirror()
    errors = run_together(reconciliation_run, threads=4)

    assert not errors
    runs = list(ReconciliationRun.objects.order_by("started_at"))
    assert len(runs) == 4
    finished = [run for run in runs if run.status == RunStatus.CLEAN]
    skipped = [run for run in runs if run.status == RunStatus.SKIPPED]
    assert finished and len(finished) + len(skipped) == 4
    # the runs that compared did so one after the other: the run's clock starts once it
    # holds the lock and stops before it lets go
    intervals = sorted((run.started_at, run.finished_at) for run in finished)
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= start
    for run in skipped:
        assert "in progress" in run.error
    assert not ReconciliationRun.objects.filter(status=RunStatus.RUNNING).exists()
