"""Small helpers that put health samples in the database, and grant permissions."""

from datetime import datetime, timedelta

from django.utils import timezone

from rollout.models import HealthSample, StageAnalysis


def permissions_grant(user, *permissions: str):
    """Give ``user`` the named permissions (``"rollout.set_stage"``); returns the user
    re-read, so no permission cache of the old object hides the grant."""
    from django.contrib.auth.models import Permission

    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return type(user).objects.get(pk=user.pk)


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


def analysis_passing(**fields):
    """A passing analysis of the stage in force (its current run), as the beat task would
    record one for a healthy stage: the precondition of raising the stage. The analysis
    itself is tested in tests/rollout/test_analysis.py."""
    from rollout.selectors import rollout_state_get

    state = rollout_state_get()
    now = timezone.now()
    return StageAnalysis.objects.create(
        stage=state.stage, stage_started_at=state.stage_started_at,
        window_start=state.stage_started_at, window_end=now, trigger="manual",
        verdict="pass", reasons=["recorded by a test"], **fields,
    )  # fmt: skip
