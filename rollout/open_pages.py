"""Open dashboards, as their telemetry reports show them: the load a stage puts on Supabase.

Every dashboard reports to ``POST /api/telemetry`` every 10 s (an empty report too: it is
the page's heartbeat) with a ``page`` id it drew when it loaded. Each report marks
``(user, page)`` as open on its transport in a Redis sorted set (score: the time). A page
not heard from for ``OPEN_PAGE_TTL_SECONDS`` is closed. So the count is measured, across
every daphne process, without a table that grows.

The quota projections (``rollout/quotas.py``) need each page's *user* too: a stage's
percentage decides users, so the pages of the users a stage moves are the connections it
adds. Invariants:

- one user counts at most ``MAX_PAGES_PER_USER`` pages (a browser's reports are in its
  user's hands: one account cannot inflate the projection without bound);
- a page is on one transport: a report on one removes it from the other;
- Redis unreachable: the write is skipped (telemetry is best effort) and the count says
  it is unknown (``None``), never zero.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from django.conf import settings

from events.sink_scheduling import redis_client
from rollout.models import Transport

logger = logging.getLogger(__name__)

OPEN_PAGE_TTL_SECONDS = 30  # three missed heartbeats
MAX_PAGES_PER_USER = 10


def _key(transport: str) -> str:
    return f"{settings.SUPABASE_BREAKER_NAMESPACE}:open-pages:{transport}"


def open_page_seen(*, user_id: int, transport: str, page_id: str, now: float | None = None) -> bool:
    """Mark a page open on ``transport``; False when Redis could not be reached."""
    now = time.time() if now is None else now
    member = f"{user_id}:{page_id}"
    try:
        pipe = redis_client().pipeline()
        for other in Transport.values:
            if other != transport:
                pipe.zrem(_key(other), member)
        pipe.zadd(_key(transport), {member: now})
        pipe.expire(_key(transport), OPEN_PAGE_TTL_SECONDS * 4)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("could not record an open page: %s", exc)
        return False
    return True


@dataclass(frozen=True)
class OpenPages:
    """Open pages per transport, and per user (the projections bucket users)."""

    by_transport: dict[str, int]
    by_user: dict[str, Counter] = field(default_factory=dict)  # transport -> {user_id: pages}

    @property
    def total(self) -> int:
        return sum(self.by_transport.values())

    def users(self) -> Counter:
        """Pages per user, whichever transport they are on now."""
        counts: Counter = Counter()
        for per_user in self.by_user.values():
            counts.update(per_user)
        return Counter({user: min(n, MAX_PAGES_PER_USER) for user, n in counts.items()})


def open_pages(*, now: float | None = None) -> OpenPages | None:
    """The pages heard from in the last ``OPEN_PAGE_TTL_SECONDS`` (None: Redis is down)."""
    now = time.time() if now is None else now
    by_transport: dict[str, int] = {}
    by_user: dict[str, Counter] = {}
    try:
        for transport in Transport.values:
            key = _key(transport)
            redis_client().zremrangebyscore(key, "-inf", now - OPEN_PAGE_TTL_SECONDS)
            members = redis_client().zrangebyscore(key, now - OPEN_PAGE_TTL_SECONDS, "+inf")
            per_user: Counter = Counter()
            for member in members:
                user_id = member.decode().split(":", 1)[0]
                if user_id.isdigit():
                    per_user[int(user_id)] += 1
            per_user = Counter({u: min(n, MAX_PAGES_PER_USER) for u, n in per_user.items()})
            by_user[transport] = per_user
            by_transport[transport] = sum(per_user.values())
    except redis.RedisError as exc:
        logger.warning("could not read the open pages: %s", exc)
        return None
    return OpenPages(by_transport=by_transport, by_user=by_user)


def open_pages_forget() -> None:
    """Forget every open page (tests start from none)."""
    redis_client().delete(*(_key(transport) for transport in Transport.values))
