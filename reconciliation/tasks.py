"""Celery tasks of the reconciliation app: thin wrappers around the services.

Beat schedules ``reconciliation.run_hourly`` and ``reconciliation.run_recheck`` (rows of
django-celery-beat's ``PeriodicTask``, created by a data migration, editable in the
admin). The services take the advisory lock themselves, so a task that starts while a
run is in progress records a skipped run and returns at once. The hard time limit sits
above the run's own (``RECONCILIATION_TIME_LIMIT_SECONDS``, default 600 s).
"""

from celery import shared_task

from reconciliation import services


def _summary(run) -> dict:
    return {
        "run_id": run.pk,
        "status": run.status,
        "from_seq": run.from_seq,
        "to_seq": run.to_seq,
        "discrepancies": run.discrepancy_count,
        "error": run.error,
    }


@shared_task(name="reconciliation.run_hourly", time_limit=900, soft_time_limit=840)
def run_hourly_task() -> dict:
    return _summary(services.reconciliation_run_hourly())


@shared_task(name="reconciliation.run_recheck", time_limit=900, soft_time_limit=840)
def run_recheck_task() -> dict:
    return _summary(services.reconciliation_run_recheck())


@shared_task(name="reconciliation.run_manual", time_limit=900, soft_time_limit=840)
def run_manual_task() -> dict:
    """A manual run of everything judgeable, as ``manage.py reconcile`` without options
    (queued by the admin's "Run now")."""
    return _summary(services.reconciliation_run())


@shared_task(name="reconciliation.repair", time_limit=900, soft_time_limit=840)
def repair_task(run_id: int, delete_extras: bool = False) -> dict:
    """Repair a run's discrepancies (the run is re-read by id)."""
    return services.reconciliation_repair(run_id=run_id, delete_extras=delete_extras).as_dict()
