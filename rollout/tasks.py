"""Celery tasks of the rollout app: thin, take ids, call a service."""

from celery import shared_task

from rollout import services


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=60)
def alert_deliver(alert_id: int) -> None:
    services.alert_deliver(alert_id=alert_id)


# The evaluation runs every 15 s: a run that takes longer is cut short rather than
# overlapping the next (the advisory lock would make the next one skip anyway).
@shared_task(ignore_result=True, soft_time_limit=12, time_limit=14, expires=15)
def rollout_health_evaluate() -> None:
    services.rollout_health_evaluate()


@shared_task(ignore_result=True, soft_time_limit=12, time_limit=14, expires=60)
def rollout_promotion_check() -> None:
    services.rollout_promotion_check()


@shared_task(ignore_result=True, soft_time_limit=240, time_limit=300)
def health_samples_prune() -> None:
    services.health_samples_prune()


# Every 5 minutes (migration 0010): the evidence of the stage in force, so far.
@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150, expires=300)
def stage_analysis_record() -> None:
    services.stage_analysis_record()


# Queued after a stage change commits: the evidence of the stage that ended.
@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def stage_analysis_final_record(
    stage: str, stage_started_at: str, ended_at: str, resumed_at: str | None, cohorts: dict
) -> None:
    from datetime import datetime

    services.stage_analysis_final_record(
        stage=stage,
        stage_started_at=datetime.fromisoformat(stage_started_at),
        ended_at=datetime.fromisoformat(ended_at),
        resumed_at=datetime.fromisoformat(resumed_at) if resumed_at else None,
        cohorts=cohorts,
    )
