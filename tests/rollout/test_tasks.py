"""The Celery tasks are thin: run in-process (eager), they do what their service does."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from rollout import services, tasks
from rollout.models import Alert, HealthSample, RolloutState
from tests.rollout.factories import samples_add

pytestmark = pytest.mark.django_db


def test_the_periodic_tasks_are_seeded_for_beat_and_editable():
    seeded = {
        task.task: (task.interval.every, task.interval.period, task.enabled)
        for task in PeriodicTask.objects.filter(task__startswith="rollout.")
    }
    assert seeded == {
        "rollout.tasks.rollout_health_evaluate": (15, "seconds", True),
        "rollout.tasks.rollout_promotion_check": (60, "seconds", True),
        "rollout.tasks.health_samples_prune": (1, "hours", True),
        "rollout.tasks.stage_analysis_record": (5, "minutes", True),
    }


def test_the_evaluation_task_rolls_back_on_a_breach(celery_eager, first_cohort):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 25)
    tasks.rollout_health_evaluate.delay()
    assert RolloutState.objects.get(id=1).killed
    assert Alert.objects.get(kind="rollback").severity == "critical"


def test_the_evaluation_task_has_a_time_limit_shorter_than_its_period():
    assert tasks.rollout_health_evaluate.time_limit < 15
    assert tasks.rollout_health_evaluate.soft_time_limit < tasks.rollout_health_evaluate.time_limit


def test_the_prune_task_deletes_old_samples(celery_eager):
    samples_add(
        transport="websocket", kind="connect", count=3, at=timezone.now() - timedelta(days=5)
    )
    tasks.health_samples_prune.delay()
    assert not HealthSample.objects.exists()


def test_the_promotion_task_does_nothing_when_promotion_is_off(celery_eager):
    tasks.rollout_promotion_check.delay()
    assert RolloutState.objects.get(id=1).stage == "shadow"


def test_the_evaluation_task_in_shadow_alerts_and_throws_no_kill_switch(celery_eager):
    samples_add(transport="websocket", kind="latency", values=[100.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[300.0] * 30)
    tasks.rollout_health_evaluate.delay()
    tasks.rollout_health_evaluate.delay()
    assert not RolloutState.objects.get(id=1).killed
    assert Alert.objects.get(kind="shadow_breach").count == 2
    assert not Alert.objects.filter(kind="rollback").exists()


def test_the_evaluation_task_does_not_undo_a_resume(celery_eager, first_cohort, staff_user):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 25)
    tasks.rollout_health_evaluate.delay()
    assert RolloutState.objects.get(id=1).killed
    services.rollout_resume(actor=staff_user, reason="fixed")
    tasks.rollout_health_evaluate.delay()
    tasks.rollout_health_evaluate.delay()
    assert not RolloutState.objects.get(id=1).killed
    assert Alert.objects.get(kind="rollback").count == 1
