"""Fixtures for reconciliation: a real supabase_local, events published the real way, and
helpers that mirror the local log into Supabase (as the Supabase sink does) or damage
the Supabase copy on purpose with plain SQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from events import services as event_services
from events.models import Delivery, DeliveryStatus, Event, Sink
from events.supabase_client import MONITORING_EVENTS_TABLE, service_client
from events.supabase_sink import event_to_supabase_row


def _row(event: Event) -> dict[str, Any]:
    return event_to_supabase_row(event)


class Log:
    """Publishes local events and mirrors them to supabase_local."""

    def __init__(self, server):
        self.server = server

    def publish(self, count: int, *, event_type: str = "tool.call", **payload: Any) -> list[int]:
        results = event_services.event_publish_batch(
            events=[
                {
                    "event_type": event_type,
                    "source": "recon-tests",
                    "payload": {"i": i, "text": "héllo", "nested": {"b": [1, 2.5]}, **payload},
                }
                for i in range(count)
            ]
        )
        return [result.seq for result in results]

    def mirror(self, seqs: Iterable[int] | None = None) -> int:
        """Write every local event routed to Supabase (or the given seqs) into
        monitoring_events with the official client, and mark its delivery sent."""
        deliveries = Delivery.objects.filter(sink=Sink.SUPABASE).exclude(
            status=DeliveryStatus.SKIPPED
        )
        if seqs is not None:
            deliveries = deliveries.filter(event_id__in=list(seqs))
        events = list(Event.objects.filter(seq__in=deliveries.values("event_id")).order_by("seq"))
        if events:
            service_client().table(MONITORING_EVENTS_TABLE).upsert(
                [_row(event) for event in events], on_conflict="seq", returning="minimal"
            ).execute()
            deliveries.update(status=DeliveryStatus.SENT)
        return len(events)

    def sql(self, query: str, *args: Any):
        return self.server.sql(query, *args)

    def remote_count(self) -> int:
        return self.server.sql("SELECT count(*) AS n FROM public.monitoring_events")[0]["n"]


@pytest.fixture
def recon_settings(settings):
    """Judge everything at once (no grace) with small chunks, so bisection really splits."""
    settings.RECONCILIATION_GRACE_SECONDS = 0
    settings.RECONCILIATION_CHUNK_SIZE = 64
    settings.RECONCILIATION_LEAF_ROWS = 4
    settings.RECONCILIATION_FANOUT = 4
    settings.RECONCILIATION_MAX_CHUNKS_PER_CALL = 8
    settings.RECONCILIATION_FETCH_BUDGET_ROWS = 0  # always bisect down to the leaves
    return settings


@pytest.fixture
def log(django_supabase, recon_settings) -> Log:
    return Log(django_supabase)
