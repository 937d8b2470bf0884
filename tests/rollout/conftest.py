"""Fixtures of the rollout tests."""

from collections.abc import Iterator

import pytest

from monitor_project.celery import app as celery_app


@pytest.fixture
def celery_eager() -> Iterator[None]:
    """Run queued tasks in the calling process (on_commit callbacks still decide when)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


@pytest.fixture
def first_cohort(staff_user) -> None:
    """The rollout past shadow (10 %): a breach now throws the kill switch."""
    from rollout import services
    from tests.rollout.factories import analysis_passing

    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
