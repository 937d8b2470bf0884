"""Rollout settings, read here once with their defaults.

The lead adds these to ``monitor_project/settings`` and the README; until then (and when a
deployment leaves them out) the defaults below apply. Read them through these functions,
not at import time, so that tests overriding settings are seen.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Slack-compatible webhook for alerts (JSON {"text": ...}); empty: email only.
    "ROLLOUT_ALERT_WEBHOOK_URL": "",
    "ROLLOUT_ALERT_WEBHOOK_TIMEOUT_SECONDS": 5.0,
    # Email new alerts to settings.ADMINS (mail_admins; nothing is sent while ADMINS is empty).
    "ROLLOUT_ALERT_EMAIL": True,
    # Latency baseline (ms) while the legacy path has too few samples in the window.
    "ROLLOUT_BASELINE_P95_MS": 100.0,
    # Health samples older than this are pruned by a periodic task.
    "ROLLOUT_SAMPLE_RETENTION_HOURS": 48,
    # Browser telemetry: requests per user per minute.
    "ROLLOUT_TELEMETRY_RATE_PER_MINUTE": 60,
    # Browser telemetry weighting (rollout/weighting.py): distinct users before pages'
    # reports count at all, and what one user's reports weigh at most in one window.
    "ROLLOUT_TELEMETRY_MIN_USERS": 5,
    "ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS": 50,
    "ROLLOUT_TELEMETRY_USER_MAX_LATENCIES": 50,
    # Prober: seconds between probes, seconds before a probe counts as lost.
    "ROLLOUT_PROBER_INTERVAL_SECONDS": 5.0,
    "ROLLOUT_PROBER_LOSS_TIMEOUT_SECONDS": 10.0,
    "ROLLOUT_PROBER_USERNAME": "monitor-prober",
    "ROLLOUT_PROBER_BASE_URL": "http://127.0.0.1:8000",
    # Seconds the evaluation may run before it gives up (it runs every 15 s).
    "ROLLOUT_EVALUATION_TIME_LIMIT_SECONDS": 10,
}


def rollout_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
