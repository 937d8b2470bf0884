"""Schedule the stage analysis every 5 minutes in Celery beat (editable in the admin), and
date the stage in force from its last stage change where the audit log has one (0009 gave
existing rows the time of the upgrade)."""

import json

from django.db import migrations

NAME = "rollout: record the stage analysis"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    RolloutState = apps.get_model("rollout", "RolloutState")
    AuditEntry = apps.get_model("rollout", "AuditEntry")

    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "rollout.tasks.stage_analysis_record",
            "interval": every,
            "enabled": True,
            "kwargs": json.dumps({}),
            "expire_seconds": 300,
        },
    )
    for state in RolloutState.objects.all():
        last = (
            AuditEntry.objects.filter(action__in=["stage", "forced"], to_value=state.stage)
            .order_by("-at")
            .first()
        )
        if last is not None:
            state.stage_started_at = last.at
            state.save(update_fields=["stage_started_at"])


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0009_stage_analyses_and_forced_promotions"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
