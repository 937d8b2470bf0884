"""Alert delivery: email to ``settings.ADMINS`` and a Slack-compatible webhook.

Each channel is tried on its own; a failure of one is reported back (and logged), never
raised, so email still goes out when the webhook is down and vice versa.
"""

import logging

import httpx
from django.conf import settings
from django.core.mail import mail_admins

from rollout.conf import rollout_setting
from rollout.models import Alert

logger = logging.getLogger(__name__)


def alert_text(alert: Alert) -> str:
    lines = [f"[{alert.severity.upper()}] {alert.kind}: {alert.message}"]
    if alert.figures:
        lines.append("figures: " + ", ".join(f"{k}={v}" for k, v in sorted(alert.figures.items())))
    return "\n".join(lines)


def alert_notify(*, alert: Alert) -> list[str]:
    errors: list[str] = []
    text = alert_text(alert)
    if rollout_setting("ROLLOUT_ALERT_EMAIL") and settings.ADMINS:
        try:
            mail_admins(f"[{alert.severity}] {alert.kind}", text, fail_silently=False)
        except Exception as exc:
            logger.warning("alert %s: email failed: %s", alert.pk, exc)
            errors.append(f"email: {type(exc).__name__}: {exc}")
    url = rollout_setting("ROLLOUT_ALERT_WEBHOOK_URL")
    if url:
        try:
            response = httpx.post(
                url,
                json={"text": text},
                timeout=rollout_setting("ROLLOUT_ALERT_WEBHOOK_TIMEOUT_SECONDS"),
            )
            response.raise_for_status()
        except Exception as exc:
            logger.warning("alert %s: webhook failed: %s", alert.pk, exc)
            errors.append(f"webhook: {type(exc).__name__}: {exc}")
    return errors
