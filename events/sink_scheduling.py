"""Scheduling the Supabase flush task after a publish commits.

One Redis flag means "a flush is already queued": publishers only queue a task when they
set it, so a burst of publishes queues one task, not thousands. The task releases the
flag before each look at the table, so nothing committed meanwhile is left waiting. The
flag expires on its own, so a lost task does not block scheduling for long; the drain
(Celery beat) covers whatever slips through.
"""

import logging

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

FLAG_TTL_SECONDS = 10


def _flag_key() -> str:
    return f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued"


_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    # One client (and connection pool) per process and URL: a new one per publish cost
    # a TCP connect each time. redis-py clients are thread-safe.
    client = _clients.get(settings.REDIS_URL)
    if client is None:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        _clients[settings.REDIS_URL] = client
    return client


def flush_schedule() -> None:
    """Write the pending deliveries now in this process (events/supabase_writer.py), and
    queue a Celery flush unless one is queued already: at once when no writer runs (in
    this process, or a ``supabase_writer`` process), else after a short countdown, as the
    safety net for what the writer misses.
    Never raises: the drain catches up."""
    from events.supabase_writer import supabase_writer_enabled, supabase_writer_wake
    from events.tasks import supabase_sink_flush_task

    in_process = supabase_writer_enabled()
    if in_process:
        supabase_writer_wake()
    writer_runs = in_process or settings.SUPABASE_WRITER_PROCESS
    try:
        if redis_client().set(_flag_key(), 1, nx=True, ex=FLAG_TTL_SECONDS):
            delay = settings.SUPABASE_SINK_LINGER_MS / 1000
            if writer_runs:
                delay = max(delay, settings.SUPABASE_SINK_SAFETY_NET_SECONDS)
            supabase_sink_flush_task.apply_async(countdown=delay or None)
    except Exception as exc:
        logger.warning("could not queue a Supabase flush (the drain will send it): %s", exc)


def flush_schedule_release() -> None:
    try:
        redis_client().delete(_flag_key())
    except redis.RedisError as exc:
        logger.warning("could not release the Supabase flush flag: %s", exc)
