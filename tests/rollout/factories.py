"""Small helpers that put health samples in the database."""

from datetime import datetime, timedelta

from django.utils import timezone

from rollout.models import HealthSample


def samples_add(
    *,
    transport: str,
    kind: str,
    values: list[float] | None = None,
    count: int | None = None,
    origin: str = "prober",
    reporter_id: int | None = None,
    at: datetime | None = None,
    spacing: timedelta = timedelta(milliseconds=10),
) -> None:
    """Add samples ending at ``at`` (default: a second ago), oldest first; browser samples
    name their ``reporter_id`` (a user id)."""
    values = values if values is not None else [1.0] * (count or 0)
    end = at or timezone.now() - timedelta(seconds=1)
    HealthSample.objects.bulk_create(
        HealthSample(
            transport=transport,
            kind=kind,
            value=value,
            origin=origin,
            reporter_id=reporter_id,
            at=end - spacing * (len(values) - 1 - index),
        )
        for index, value in enumerate(values)
    )
