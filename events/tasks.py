"""Celery tasks of the event log: thin wrappers around the Supabase sink."""

import time

from celery import shared_task

from events import supabase_sink
from events.sink_scheduling import flush_schedule_release

FLUSH_TIME_BUDGET_SECONDS = 20
DRAIN_TIME_BUDGET_SECONDS = 50


@shared_task(name="events.supabase_sink_flush", time_limit=60, soft_time_limit=55)
def supabase_sink_flush_task() -> dict:
    """Write pending deliveries until none are left (or the budget is spent)."""
    sent = 0
    deadline = time.monotonic() + FLUSH_TIME_BUDGET_SECONDS
    while time.monotonic() < deadline:
        # Released before looking, so an event committed after the last look schedules
        # another flush instead of waiting for the drain.
        flush_schedule_release()
        result = supabase_sink.supabase_sink_flush()
        sent += result.sent
        if result.outcome != "sent":
            break
    return {"sent": sent}


@shared_task(name="events.supabase_sink_drain", time_limit=60, soft_time_limit=55)
def supabase_sink_drain_task() -> dict:
    """Beat: re-send pending and due failed deliveries, oldest first; stop on an open
    breaker."""
    sent = failed = 0
    deadline = time.monotonic() + DRAIN_TIME_BUDGET_SECONDS
    while time.monotonic() < deadline:
        result = supabase_sink.supabase_sink_flush(include_failed=True)
        sent += result.sent
        failed += result.failed
        if result.outcome != "sent":
            return {"sent": sent, "failed": failed, "stopped": result.outcome}
    return {"sent": sent, "failed": failed, "stopped": "time_budget"}
