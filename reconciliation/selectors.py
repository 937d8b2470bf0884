"""Reads of the reconciliation app: ranges for the scheduled runs, figures for the admin."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Max

from events.models import Event
from reconciliation.models import ReconciliationRun, RunStatus, RunTrigger

FINISHED_STATUSES = (RunStatus.CLEAN, RunStatus.DISCREPANCIES)


def local_max_seq() -> int:
    return Event.objects.aggregate(top=Max("seq"))["top"] or 0


def local_judgeable_to_seq(*, cutoff: datetime) -> int:
    """One past the highest seq received at or before ``cutoff`` (exclusive end)."""
    top = (
        Event.objects.filter(received_at__lte=cutoff)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return (top or 0) + 1


def run_running() -> ReconciliationRun | None:
    return ReconciliationRun.objects.filter(status=RunStatus.RUNNING).order_by("started_at").first()


def recheck_next_range(*, rows: int, watermark: int) -> tuple[int, int]:
    """The next slice of the judgeable log (``1 .. watermark - 1``) for the rolling full
    pass, oldest first, wrapping around: (from_seq, to_seq) both inclusive."""
    last_end = (
        ReconciliationRun.objects.filter(trigger=RunTrigger.RECHECK, status__in=FINISHED_STATUSES)
        .order_by("-started_at")
        .values_list("to_seq", flat=True)
        .first()
    )
    start = (last_end or 0) + 1
    if start >= watermark:
        start = 1
    return start, max(start, min(start + rows - 1, watermark - 1))


def runs_for_chart(*, limit: int = 100) -> list[ReconciliationRun]:
    """The latest finished runs, oldest first, for the consistency chart."""
    runs = list(
        ReconciliationRun.objects.filter(
            status__in=FINISHED_STATUSES, consistency_rate__isnull=False
        ).order_by("-started_at")[:limit]
    )
    return runs[::-1]
