"""Reads of the event log and of the routing configuration."""

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, QuerySet

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


def events_after(
    *, after: int, limit: int, up_to: int | None = None, sink: str | None = None
) -> list[Event]:
    """At most ``limit`` events with ``after < seq (<= up_to)`` in seq order; with
    ``sink``, only those routed to that sink."""
    queryset = Event.objects.filter(seq__gt=after)
    if up_to is not None:
        queryset = queryset.filter(seq__lte=up_to)
    return list(_routed_to(queryset, sink).order_by("seq")[:limit])


def events_latest(*, limit: int) -> list[Event]:
    return list(Event.objects.order_by("-seq")[:limit])


def event_latest_seq() -> int:
    return Event.objects.aggregate(latest=Max("seq"))["latest"] or 0


def producer_by_name(name: str) -> Producer | None:
    return Producer.objects.filter(name=name.strip()).first()


def producer_for_token(token: str) -> Producer | None:
    """The active producer a bearer token belongs to, or None."""
    prefix = tokens.token_prefix(token)
    producer = (
        Producer.objects.filter(token_prefix=prefix, is_active=True).first() if prefix else None
    )
    if producer is None:
        # Do the same hashing work as a real comparison, so timing reveals nothing.
        tokens.token_matches(token, "0" * 64)
        return None
    return producer if tokens.token_matches(token, producer.token_hash) else None
