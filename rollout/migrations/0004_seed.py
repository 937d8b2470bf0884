"""Seed the rollout: the ``supabase_realtime`` flag at 0 %, the state and threshold rows,
and the periodic tasks (in django-celery-beat's tables, so staff can edit them)."""

import json

from django.db import migrations

PERIODIC_TASKS = [
    # (name, task, every, period)
    ("rollout: evaluate health (rollback)", "rollout.tasks.rollout_health_evaluate", 15, "seconds"),
    ("rollout: promotion check", "rollout.tasks.rollout_promotion_check", 60, "seconds"),
    ("rollout: prune health samples", "rollout.tasks.health_samples_prune", 1, "hours"),
]


def seed(apps, schema_editor):
    Flag = apps.get_model("rollout", "Flag")
    RolloutState = apps.get_model("rollout", "RolloutState")
    Thresholds = apps.get_model("rollout", "Thresholds")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")

    Flag.objects.get_or_create(
        name="supabase_realtime",
        defaults={
            "percent": 0,
            "superusers": False,
            "note": "Who reads the live feed from Supabase Realtime. Set through the rollout "
            "stage (rollout panel or `manage.py rollout stage`), not by hand.",
        },
    )
    RolloutState.objects.get_or_create(id=1)
    Thresholds.objects.get_or_create(id=1)
    for name, task, every, period in PERIODIC_TASKS:
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": schedule,
                "enabled": True,
                "kwargs": json.dumps({}),
                # Skip runs that queued up while no worker was there: a stale evaluation
                # is worth nothing.
                "expire_seconds": max(every if period == "seconds" else 3600, 10),
            },
        )


def unseed(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in PERIODIC_TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0003_state_audit_health_alerts"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
