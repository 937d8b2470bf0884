"""Schedule the hourly run and the rolling re-check in Celery beat (editable in the admin)."""

from django.db import migrations

HOURLY = "Reconciliation: hourly run over new events"
RECHECK = "Reconciliation: rolling re-check of older events"


def schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    at_7, _ = CrontabSchedule.objects.get_or_create(
        minute="7", hour="*", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    at_37, _ = CrontabSchedule.objects.get_or_create(
        minute="37", hour="*", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        name=HOURLY,
        defaults={"task": "reconciliation.run_hourly", "crontab": at_7, "enabled": True},
    )
    PeriodicTask.objects.get_or_create(
        name=RECHECK,
        defaults={"task": "reconciliation.run_recheck", "crontab": at_37, "enabled": True},
    )


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[HOURLY, RECHECK]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_runs_and_discrepancies"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(schedule, unschedule)]
