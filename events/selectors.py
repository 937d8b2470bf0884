"""Reads of the event log and of the routing configuration."""

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, Max, OuterRef, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone

from events import tokens
from events.checksums import format_timestamp
from events.classification import Rule, order_rules
from events.models import (
    ClassificationRule,
    Delivery,
    DeliveryStatus,
    Event,
    Producer,
    Route,
)

# Synthetic traffic: events the system publishes to measure itself (the prober's
# ``monitor.probe``, rollout/prober.py). They travel every path like any event, but users'
# dashboards and the backfill API leave them out unless staff ask for them.
SYNTHETIC_EVENT_TYPES = frozenset({"monitor.probe"})


def event_is_synthetic(event_type: str) -> bool:
    return event_type in SYNTHETIC_EVENT_TYPES


def viewer_sees_synthetic(user, *, requested: bool) -> bool:
    """Whether a feed or page for ``user`` carries synthetic events.

    Staff see them when they ask; the prober's service user always does (it measures
    delivery by receiving its own probes); everyone else never does.
    """
    from rollout.conf import rollout_setting

    if user is None or not user.is_authenticated:
        return False
    if user.get_username() == rollout_setting("ROLLOUT_PROBER_USERNAME"):
        return True
    return bool(requested and user.is_staff)


@dataclass(frozen=True)
class RouteDecision:
    to_websocket: bool
    to_supabase: bool
    supabase_sample_percent: Decimal


# Criticalities with no Route row go to both sinks, so a deleted route never drops events.
DEFAULT_ROUTE = RouteDecision(
    to_websocket=True, to_supabase=True, supabase_sample_percent=Decimal(100)
)


@dataclass(frozen=True)
class RoutingTable:
    rules: tuple[Rule, ...]
    routes: dict[str, RouteDecision]

    def route_for(self, criticality: str) -> RouteDecision:
        return self.routes.get(criticality, DEFAULT_ROUTE)


_routing_lock = threading.Lock()
_routing_cache: tuple[float, RoutingTable] | None = None


def routing_table() -> RoutingTable:
    """Rules and routes, re-read at most every ``EVENTS_RULES_CACHE_SECONDS``."""
    global _routing_cache
    ttl = settings.EVENTS_RULES_CACHE_SECONDS
    cached = _routing_cache
    if cached is not None and ttl > 0 and time.monotonic() - cached[0] < ttl:
        return cached[1]
    rules = order_rules(
        Rule(
            match_kind=row.match_kind,
            value=row.value,
            criticality=row.criticality,
            priority=row.priority,
        )
        for row in ClassificationRule.objects.filter(is_enabled=True)
    )
    routes = {
        row.criticality: RouteDecision(
            to_websocket=row.to_websocket,
            to_supabase=row.to_supabase,
            supabase_sample_percent=row.supabase_sample_percent,
        )
        for row in Route.objects.all()
    }
    table = RoutingTable(rules=tuple(rules), routes=routes)
    with _routing_lock:
        _routing_cache = (time.monotonic(), table)
    return table


def routing_table_forget() -> None:
    global _routing_cache
    with _routing_lock:
        _routing_cache = None


def event_to_wire(event: Event) -> dict[str, Any]:
    """The JSON shape of an event on every API and feed."""
    return {
        "seq": event.seq,
        "event_type": event.event_type,
        "source": event.source,
        "criticality": event.criticality,
        "occurred_at": format_timestamp(event.occurred_at),
        "received_at": format_timestamp(event.received_at),
        "payload": event.payload,
        "checksum": event.checksum,
    }


def _routed_to(queryset: QuerySet[Event], sink: str | None) -> QuerySet[Event]:
    if sink is None:
        return queryset
    skipped = Delivery.objects.filter(
        event=OuterRef("pk"), sink=sink, status=DeliveryStatus.SKIPPED
    )
    return queryset.exclude(Exists(skipped))


def _visible(queryset: QuerySet[Event], include_synthetic: bool) -> QuerySet[Event]:
    if include_synthetic:
        return queryset
    return queryset.exclude(event_type__in=SYNTHETIC_EVENT_TYPES)


def events_after(
    *,
    after: int,
    limit: int,
    up_to: int | None = None,
    sink: str | None = None,
    include_synthetic: bool = True,
) -> list[Event]:
    """At most ``limit`` events with ``after < seq (<= up_to)`` in seq order; with
    ``sink``, only those routed to that sink; without ``include_synthetic``, no
    synthetic events (the seqs they hold are simply absent from the answer)."""
    queryset = Event.objects.filter(seq__gt=after)
    if up_to is not None:
        queryset = queryset.filter(seq__lte=up_to)
    queryset = _visible(queryset, include_synthetic)
    return list(_routed_to(queryset, sink).order_by("seq")[:limit])


def events_latest(*, limit: int, include_synthetic: bool = True) -> list[Event]:
    return list(_visible(Event.objects.all(), include_synthetic).order_by("-seq")[:limit])


RATE_MINUTES = 30


def events_per_minute(
    *,
    up_to_seq: int,
    minutes: int = RATE_MINUTES,
    include_synthetic: bool = True,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Events per minute of ``received_at`` and criticality over the last ``minutes``
    minutes (the current one included), counting only seqs up to ``up_to_seq`` so that a
    page can add the events it receives after that without counting any twice.

    ``[{"minute": <epoch seconds of the minute's start>, "counts": {criticality: n}}]``,
    oldest first; minutes without events are left out.
    """
    now = now or timezone.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    queryset = _visible(
        Event.objects.filter(received_at__gte=start, seq__lte=up_to_seq), include_synthetic
    )
    rows = (
        queryset.annotate(minute=TruncMinute("received_at"))
        .values("minute", "criticality")
        .annotate(count=Count("seq"))
        .order_by("minute", "criticality")
    )
    by_minute: dict[int, dict[str, int]] = {}
    for row in rows:
        key = int(row["minute"].timestamp())
        by_minute.setdefault(key, {})[row["criticality"]] = row["count"]
    return [{"minute": minute, "counts": counts} for minute, counts in by_minute.items()]


def event_latest_seq() -> int:
    return Event.objects.aggregate(latest=Max("seq"))["latest"] or 0


def producer_by_name(name: str) -> Producer | None:
    return Producer.objects.filter(name=name.strip()).first()


def _active_producer_by_prefix(prefix: str) -> Producer | None:
    # Every ingest request asks this: one plain query and ``from_db`` cost a quarter of
    # what the queryset's compilation did (docs/latency.md, the publish path).
    fields = [field.attname for field in Producer._meta.concrete_fields]
    columns = ", ".join(
        connection.ops.quote_name(field.column) for field in Producer._meta.concrete_fields
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {Producer._meta.db_table} "
            "WHERE token_prefix = %s AND is_active",
            [prefix],
        )
        row = cursor.fetchone()
    return Producer.from_db(connection.alias, fields, row) if row else None


def producer_for_token(token: str) -> Producer | None:
    """The active producer a bearer token belongs to, or None."""
    prefix = tokens.token_prefix(token)
    producer = _active_producer_by_prefix(prefix) if prefix else None
    if producer is None:
        # Do the same hashing work as a real comparison, so timing reveals nothing.
        tokens.token_matches(token, "0" * 64)
        return None
    return producer if tokens.token_matches(token, producer.token_hash) else None


# --- Load on the Supabase path (quotas: rollout/quotas.py, events/supabase_coalescing.py) ---

LOAD_WINDOW_SECONDS = 60
# The event rate is the higher of the last minute's and the last few seconds': a rising
# load must widen the sink's window within seconds, not after a minute of averaging.
LOAD_SHORT_WINDOW_SECONDS = 2


@dataclass(frozen=True)
class SupabaseWriteRate:
    """What the local log says the Supabase sink is doing, averaged over ``window_seconds``."""

    window_seconds: int
    # Events received and routed to Supabase (not skipped): the higher of the window's
    # average and the last LOAD_SHORT_WINDOW_SECONDS' average.
    events_per_second: float
    statements_per_second: float  # upserts that wrote them (one ``sent_at`` per upsert)

    @property
    def events_per_statement(self) -> float | None:
        if not self.statements_per_second:
            return None
        return self.events_per_second / self.statements_per_second


def supabase_write_rate(
    *, window_seconds: int = LOAD_WINDOW_SECONDS, now: datetime | None = None
) -> SupabaseWriteRate:
    """Events/s routed to Supabase and upserts/s that carried them, from the local log
    (the event rate: the higher of the window's and the last few seconds').

    Both read through the received_at index: a statement that wrote an event received
    before the window's start by more than one window is not counted (a drain catching up
    after an outage is not the steady rate the projections want).
    """
    from events.models import Sink

    now = now or timezone.now()
    since = now - timedelta(seconds=window_seconds)
    skipped = Delivery.objects.filter(
        event=OuterRef("pk"), sink=Sink.SUPABASE, status=DeliveryStatus.SKIPPED
    )
    routed = Event.objects.exclude(Exists(skipped)).filter(received_at__lte=now)
    events = routed.filter(received_at__gt=since).count()
    short = min(LOAD_SHORT_WINDOW_SECONDS, window_seconds)
    recent = routed.filter(received_at__gt=now - timedelta(seconds=short)).count()
    statements = (
        Delivery.objects.filter(
            sink=Sink.SUPABASE,
            event__received_at__gt=since - timedelta(seconds=window_seconds),
            sent_at__gt=since,
            sent_at__lte=now,
        )
        .values("sent_at")
        .distinct()
        .count()
    )
    return SupabaseWriteRate(
        window_seconds=window_seconds,
        events_per_second=max(events / window_seconds, recent / short),
        statements_per_second=statements / window_seconds,
    )
