"""Project package: settings, ASGI routing, the Celery app, URLs and the dev stack launcher."""

from monitor_project.celery import app as celery_app

__all__ = ["celery_app"]
