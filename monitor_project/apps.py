from django.apps import AppConfig


class MonitorProjectConfig(AppConfig):
    """Registered as an app only so that ``manage.py devstack`` is found."""

    name = "monitor_project"
    verbose_name = "Monitor"
