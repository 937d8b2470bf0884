"""Celery tasks of the rollout app: thin, take ids, call a service."""

from celery import shared_task

from rollout import services


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=60)
def alert_deliver(alert_id: int) -> None:
    services.alert_deliver(alert_id=alert_id)
