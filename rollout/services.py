"""Writes of the rollout app: stage, kill switch, preferences, audit, samples, alerts.

Every function is keyword-only and transactional. Side effects that leave the database
(control messages to open dashboards, alert delivery) are queued with
``transaction.on_commit``, so nothing is ever announced for a change that rolled back.
"""

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from rollout.models import Alert, AlertSeverity

logger = logging.getLogger(__name__)


# --- Alerts -------------------------------------------------------------------------------


def _alert_delivery_enqueue(alert_id: int) -> None:
    from rollout.tasks import alert_deliver

    try:
        alert_deliver.delay(alert_id)
    except Exception:  # the broker being down must not undo the alert itself
        logger.exception("could not queue delivery of alert %s", alert_id)


def alert_raise(
    *, kind: str, severity: str, message: str, figures: dict[str, Any] | None = None
) -> Alert:
    """Record an alert, or bump the open one of the same kind.

    A new alert is delivered (email to ADMINS, optional webhook) after commit by a Celery
    task; a repeat while one of its kind is still unacknowledged only updates ``count``,
    ``last_seen``, the message and the figures, so a condition seen every 15 s notifies
    once. Safe to call inside the caller's transaction (deliveries wait for its commit).
    """
    if severity not in AlertSeverity.values:
        raise ValueError(f"severity must be one of {AlertSeverity.values}, not {severity!r}")
    if not kind:
        raise ValueError("kind is required")
    figures = figures or {}
    # Two attempts: a concurrent raiser may create the open alert between our read and
    # our insert; the partial unique index turns that into an IntegrityError, and the
    # second pass then finds and bumps its row.
    for attempt in range(2):
        try:
            with transaction.atomic():
                now = timezone.now()
                alert = (
                    Alert.objects.select_for_update()
                    .filter(kind=kind, acknowledged_at__isnull=True)
                    .first()
                )
                if alert is not None:
                    alert.count += 1
                    alert.last_seen = now
                    alert.message = message
                    alert.figures = figures
                    # A repeat may be more serious than the first; never less.
                    order = list(AlertSeverity.values)
                    if order.index(severity) > order.index(alert.severity):
                        alert.severity = severity
                    alert.save(
                        update_fields=["count", "last_seen", "message", "figures", "severity"]
                    )
                    return alert
                alert = Alert.objects.create(
                    kind=kind,
                    severity=severity,
                    message=message,
                    figures=figures,
                    first_seen=now,
                    last_seen=now,
                )
                transaction.on_commit(lambda alert_id=alert.id: _alert_delivery_enqueue(alert_id))
                return alert
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def alert_acknowledge(*, alert: Alert, user) -> Alert:
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.acknowledged_at is None:
            alert.acknowledged_at = timezone.now()
            alert.acknowledged_by = user
            alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
        return alert


def alert_deliver(*, alert_id: int) -> None:
    """Email the admins and post to the webhook; called by the Celery task.

    Re-reads the alert (it may have been acknowledged or deleted since); records the
    outcome on the row. Raises nothing for a missing alert.
    """
    from rollout import notify

    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None or alert.delivered_at is not None:
        return
    errors = notify.alert_notify(alert=alert)
    Alert.objects.filter(pk=alert_id).update(
        delivered_at=timezone.now(), delivery_error="; ".join(errors)[:2000]
    )
