"""Coalescing of Supabase writes: the messages/s the sink causes stay under a budget.

With the statement-level broadcast trigger (``supabase/migrations``), one upsert goes out
as one Realtime message (more only past the payload limit), and Realtime counts it once
for every subscriber it reaches: messages/s ≈ upserts/s × (subscribers + 1). The sink
therefore spaces its upserts by a **window** (``rollout.quotas.coalescing_window_ms``):

- 0 while one upsert per event fits the budget (``SUPABASE_MESSAGES_BUDGET_PERCENT`` of
  the plan's messages/s, ``SUPABASE_PLAN``): each event is written as soon as it commits;
- past that, the interval the budget allows, growing with the subscribers, at most
  ``SUPABASE_COALESCE_MAX_WINDOW_MS``: the events of one window go out in one upsert.

The window is one slot in Redis shared by every writer (the in-process writers of every
daphne process, the Celery flush and drain): ``SET NX PX window`` takes the slot; a writer
that finds it taken waits for it, and the rows that commit meanwhile join its upsert.
Nothing is dropped: rows only wait as pending deliveries, which the ledger keeps. Redis
unreachable: no wait (the budget is a courtesy to the quota; the rows matter more).

The window is recomputed at most every ``WINDOW_CACHE_SECONDS`` (2) from the measured load
(open Supabase pages, event rate) and kept in the cache, where the panel reads it too.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

WINDOW_CACHE_KEY = "events:supabase-coalescing"
WINDOW_CACHE_SECONDS = 2
# A window of 0 is kept for less: a load that starts from quiet must be coalesced within
# moments, or its first second of one-upsert-per-event already costs the budget.
IDLE_WINDOW_CACHE_SECONDS = 0.5


def _slot_key() -> str:
    return f"{settings.SUPABASE_BREAKER_NAMESPACE}:write-slot"


def coalescing_state_compute() -> dict[str, Any]:
    """The window for the stage in force at the measured load, with what it came from."""
    from rollout.quotas import measured_load, stage_project
    from rollout.selectors import rollout_state_get

    state = rollout_state_get()
    load = measured_load()
    projection = stage_project(stage=state.stage, load=load, state=state)
    # Killed: nobody on Supabase but the prober, nothing to coalesce for.
    window = 0 if state.killed else projection.window_ms
    return {
        "window_ms": window,
        "subscribers": 0 if state.killed else projection.connections,
        "events_per_second": load.events_per_second,
        "statements_per_second": load.statements_per_second,
        "budget_messages_per_second": projection.budget,
        "computed_at": time.time(),
    }


def coalescing_state(*, fresh: bool = False) -> dict[str, Any]:
    """The sink's current window and what it was computed from (cached a few seconds)."""
    if not fresh:
        cached = cache.get(WINDOW_CACHE_KEY)
        if cached is not None:
            return cached
    state = coalescing_state_compute()
    ttl = WINDOW_CACHE_SECONDS if state["window_ms"] else IDLE_WINDOW_CACHE_SECONDS
    cache.set(WINDOW_CACHE_KEY, state, ttl)
    return state


def sink_window_ms() -> int:
    """The window the sink keeps between upserts now (0: none). Never raises: a failure
    to measure writes at once, as without a plan."""
    from events.supabase_plan import supabase_plan

    try:
        if supabase_plan().messages is None:
            return 0
        return int(coalescing_state()["window_ms"])
    except Exception:
        logger.exception("coalescing window unavailable; writing without one")
        return 0


def window_rows(*, window_ms: int) -> int:
    """Rows one window's upsert must be able to take: twice what the measured rate brings
    in one window, so a backlog drains instead of growing by a batch a window."""
    if window_ms <= 0:
        return 0
    try:
        rate = float(coalescing_state()["events_per_second"])
    except Exception:
        return 0
    return math.ceil(rate * window_ms / 1000 * 2)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def write_slot_wait(*, window_ms: int) -> str | None:
    """Wait for the shared write slot and take it for ``window_ms``; returns the slot's
    token (None: no window, or Redis unreachable).

    A writer that loses the slot to another simply waits for the next one: the winner
    writes every pending row, so waiting costs nothing but strictly keeps one upsert per
    window. The slot always frees (it expires), so the wait ends; Redis unreachable: no
    wait."""
    if window_ms <= 0:
        return None
    from events.sink_scheduling import redis_client

    token = uuid.uuid4().hex
    try:
        client = redis_client()
        while not client.set(_slot_key(), token, nx=True, px=window_ms):
            remaining_ms = client.pttl(_slot_key())
            time.sleep((remaining_ms if remaining_ms and remaining_ms > 0 else 5) / 1000)
    except redis.RedisError as exc:
        logger.warning("coalescing slot unavailable, writing now: %s", exc)
        return None
    return token


def write_slot_release(token: str | None) -> None:
    """Give back a slot that carried no upsert (nothing was pending): no message went out,
    so the next writer need not wait for the window. Only our own slot is deleted."""
    if token is None:
        return
    from events.sink_scheduling import redis_client

    try:
        redis_client().eval(_RELEASE, 1, _slot_key(), token)
    except redis.RedisError as exc:
        logger.warning("could not release the coalescing slot: %s", exc)
