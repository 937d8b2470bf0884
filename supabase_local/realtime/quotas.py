"""Quotas: what a real project's Realtime refuses, counted the way its server counts.

Realtime keeps per-tenant ``RateCounter``s: events are added to a counter, every tick
(5 s) the count becomes a bucket, the last 12 buckets are averaged per second, and the
limit is *triggered* when that average reaches it and released when it falls below.

* **Messages per second** counts every message delivered to a channel (a broadcast heard
  by 5 clients is 5, as Supabase bills it) and every broadcast sent. While triggered, a
  channel that receives a message is shut down with the system error "Too many messages
  per second", and database broadcasts are not sent.
* **Joins per second**: while triggered, a join is refused "ClientJoinRateLimitReached:
  Too many joins per second" and its socket disconnected.
* **Concurrent connections** are sockets with at least one joined channel; a join from a
  socket not yet counted, once the quota is reached, is refused "ConnectionRateLimitReached:
  Too many connected users".

``Quotas`` also keeps the totals that ``GET /metrics`` (``metrics.py``) shows.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

TOO_MANY_CONNECTIONS = "ConnectionRateLimitReached: Too many connected users"
TOO_MANY_JOINS = "ClientJoinRateLimitReached: Too many joins per second"
TOO_MANY_MESSAGES = "Too many messages per second"


class RateCounter:
    """Realtime's RateCounter: per-tick buckets, averaged per second over the last few."""

    def __init__(self, *, limit: int | None, tick_s: float, buckets: int) -> None:
        self.limit = limit
        self.tick_s = tick_s
        self._current = 0
        self._buckets: deque[int] = deque(maxlen=buckets)
        self.average = 0.0
        self.triggered = False

    def add(self, count: int = 1) -> None:
        self._current += count

    def tick(self) -> None:
        self._buckets.appendleft(self._current)
        self._current = 0
        self.average = sum(self._buckets) / len(self._buckets) / self.tick_s
        if self.limit is not None:
            # Realtime: triggered at >= limit; once triggered, released only below it.
            self.triggered = self.average >= self.limit


class Quotas:
    def __init__(self, limits: Any) -> None:
        self.limits = limits
        tick_s = limits.rate_tick_ms / 1000
        self.messages = RateCounter(
            limit=limits.max_events_per_second, tick_s=tick_s, buckets=limits.rate_buckets
        )
        self.joins = RateCounter(
            limit=limits.max_joins_per_second, tick_s=tick_s, buckets=limits.rate_buckets
        )
        self.counted_connections: set[Any] = set()
        self.messages_total = 0
        self.joins_total = 0
        self.refusals: Counter[str] = Counter()

    async def run(self) -> None:
        """Tick the rate counters for as long as the server runs."""
        while True:
            await asyncio.sleep(self.messages.tick_s)
            self.messages.tick()
            self.joins.tick()

    # -- joins ---------------------------------------------------------------------------

    def join_refusal(self, conn: Any) -> str | None:
        """Why this join is refused, or None; a join let through is counted."""
        limit = self.limits.max_concurrent_users
        if (
            limit is not None
            and conn not in self.counted_connections
            and len(self.counted_connections) >= limit
        ):
            self.refusals["concurrent_users"] += 1
            return TOO_MANY_CONNECTIONS
        if self.joins.triggered:
            self.refusals["joins_per_second"] += 1
            return TOO_MANY_JOINS
        self.joins.add()
        self.joins_total += 1
        return None

    def joined(self, conn: Any) -> None:
        self.counted_connections.add(conn)

    def left(self, conn: Any) -> None:
        self.counted_connections.discard(conn)

    # -- messages ------------------------------------------------------------------------

    def delivered(self, count: int) -> None:
        """``count`` channels received a message (a broadcast sent counts once more)."""
        self.messages.add(count)
        self.messages_total += count

    def database_broadcast_refused(self) -> bool:
        if self.messages.triggered:
            self.refusals["events_per_second"] += 1
            return True
        return False

    def payload_too_large(self, size: int) -> bool:
        if size > self.limits.max_broadcast_payload_bytes:
            self.refusals["payload_size"] += 1
            return True
        return False
