"""Writes to the event log.

``event_publish_batch`` is the one way an event enters the system. It validates and
classifies outside the transaction, then in ONE transaction allocates seqs from the locked
``SeqCounter`` row, writes the events and one delivery per sink, and only after commit
hands the events to the websocket sink. Holding the counter lock until commit makes seq
order equal commit order, so a follower that has seen seq N has seen every seq below it.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from events import sink_scheduling, sinks, tokens
from events.checksums import event_checksum_of
from events.classification import classify
from events.models import Delivery, DeliveryStatus, Event, Producer, SeqCounter, Sink
from events.selectors import RouteDecision, routing_table
from events.supabase_sink import supabase_sink_flush  # noqa: F401  (public surface)
from events.validation import EventInput, EventInputError, parse_event_input
from monitor_project.after_response import after_response


class IdempotencyConflict(Exception):
    """An idempotency key was reused for an event with different content."""

    def __init__(self, *, idempotency_key: str, seq: int):
        super().__init__(
            f"idempotency key {idempotency_key!r} was already used for event {seq} "
            "with different content"
        )
        self.idempotency_key = idempotency_key
        self.seq = seq


@dataclass(frozen=True)
class PublishResult:
    seq: int
    duplicate: bool
    event: Event


def _supabase_sampled(*, seq: int, route: RouteDecision) -> bool:
    """A stable per-seq decision, so a retried publish samples the same way."""
    if route.supabase_sample_percent >= 100:
        return True
    if route.supabase_sample_percent <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(f"sample:{seq}".encode()).digest()[:4], "big") % 10_000
    return bucket < int(route.supabase_sample_percent * 100)


def _same_content(existing: Event, candidate: EventInput) -> bool:
    if candidate.occurred_at is not None and candidate.occurred_at != existing.occurred_at:
        return False
    return (
        existing.event_type == candidate.event_type
        and existing.source == candidate.source
        and existing.payload == candidate.payload
    )


def _seq_counter_lock() -> int:
    """Lock the counter row until commit and return the last seq handed out.

    An upsert rather than a plain SELECT FOR UPDATE, so that a database whose counter row
    is missing (a truncated test database) starts again from the highest stored seq.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {SeqCounter._meta.db_table} (id, last_seq)
            VALUES (1, (SELECT coalesce(max(seq), 0) FROM {Event._meta.db_table}))
            ON CONFLICT (id) DO UPDATE SET last_seq = {SeqCounter._meta.db_table}.last_seq
            RETURNING last_seq
            """
        )
        return cursor.fetchone()[0]


def _coerce_inputs(events: Sequence[EventInput | dict[str, Any]]) -> list[EventInput]:
    return [
        item
        if isinstance(item, EventInput)
        else parse_event_input(item, field_prefix=f"events[{i}].")
        for i, item in enumerate(events)
    ]


def event_publish_batch(
    *, events: Sequence[EventInput | dict[str, Any]], producer: Producer | None = None
) -> list[PublishResult]:
    """Store events once each, in order, and schedule their delivery.

    Raises ``EventInputError`` for bad input and ``IdempotencyConflict`` for a reused key
    with other content; in both cases nothing is written.
    """
    inputs = _coerce_inputs(events)
    if not inputs:
        return []
    table = routing_table()
    criticalities = [
        classify(event_type=item.event_type, payload=item.payload, rules=table.rules)
        for item in inputs
    ]

    with transaction.atomic():
        last_seq = _seq_counter_lock()
        # Checked under the counter lock: every publisher serialises here, so a key
        # committed by another publisher is visible to this read.
        keys = {item.idempotency_key for item in inputs if item.idempotency_key}
        existing_by_key = {}
        if keys:
            existing_by_key = {
                event.idempotency_key: event
                for event in Event.objects.filter(producer=producer, idempotency_key__in=keys)
            }

        received_at = timezone.now()
        next_seq = last_seq
        new_events: list[Event] = []
        results: list[PublishResult] = []
        for item, criticality in zip(inputs, criticalities, strict=True):
            earlier = existing_by_key.get(item.idempotency_key) if item.idempotency_key else None
            if earlier is not None:
                if not _same_content(earlier, item):
                    raise IdempotencyConflict(idempotency_key=item.idempotency_key, seq=earlier.seq)
                results.append(PublishResult(seq=earlier.seq, duplicate=True, event=earlier))
                continue
            next_seq += 1
            occurred_at: datetime = item.occurred_at or received_at
            event = Event(
                seq=next_seq,
                event_type=item.event_type,
                source=item.source,
                criticality=criticality,
                occurred_at=occurred_at,
                received_at=received_at,
                payload=item.payload,
                producer=producer,
                idempotency_key=item.idempotency_key,
            )
            event.checksum = event_checksum_of(event)
            new_events.append(event)
            if item.idempotency_key:
                existing_by_key[item.idempotency_key] = event
            results.append(PublishResult(seq=event.seq, duplicate=False, event=event))

        if new_events:
            deliveries = _deliveries_for(new_events, table=table)
            _insert_rows(new_events, deliveries, last_seq=next_seq)
            to_websocket: list[Event] = []
            passed_seqs: list[int] = []
            for event in new_events:
                if table.route_for(event.criticality).to_websocket:
                    to_websocket.append(event)
                else:
                    passed_seqs.append(event.seq)
            # The fan-out goes after the producer's answer when there is one to send
            # first (monitor_project/after_response.py): the events are durable here.
            transaction.on_commit(
                lambda: after_response(
                    lambda: sinks.websocket_sink_send(events=to_websocket, passed_seqs=passed_seqs)
                )
            )
            if any(
                d.sink == Sink.SUPABASE and d.status == DeliveryStatus.PENDING for d in deliveries
            ):
                transaction.on_commit(lambda: after_response(sink_scheduling.flush_schedule))
    return results


def _insert_rows(events: list[Event], deliveries: list["_NewDelivery"], *, last_seq: int) -> None:
    """The events, their deliveries and the counter's new value in ONE statement.

    The rows travel as one JSON document per table, unpacked by ``json_to_recordset``:
    encoding it is one ``json.dumps`` at C speed, where binding a Python list per column
    (or the ORM's ``bulk_create``) spent more time in Python than PostgreSQL spent writing.
    The three writes are data-modifying CTEs of one statement, so a batch costs one round
    trip; the deliveries' foreign key is checked at commit (Django's constraints are
    deferred), so it sees the events of the same statement.
    """
    event_rows = json.dumps(
        [
            {
                "seq": e.seq,
                "event_type": e.event_type,
                "source": e.source,
                "criticality": e.criticality,
                "occurred_at": e.occurred_at.isoformat(),
                "received_at": e.received_at.isoformat(),
                "payload": e.payload,
                "checksum": e.checksum,
                "producer_id": e.producer_id,
                "idempotency_key": e.idempotency_key,
            }
            for e in events
        ],
        ensure_ascii=False,
    )
    delivery_rows = json.dumps(
        [{"event_id": d.event_id, "sink": d.sink, "status": d.status} for d in deliveries]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH new_events AS (
                INSERT INTO {Event._meta.db_table} (seq, event_type, source, criticality,
                    occurred_at, received_at, payload, checksum, producer_id, idempotency_key)
                SELECT seq, event_type, source, criticality, occurred_at, received_at,
                    payload, checksum, producer_id, idempotency_key
                FROM json_to_recordset(%s::json) AS r(seq bigint, event_type text,
                    source text, criticality text, occurred_at timestamptz,
                    received_at timestamptz, payload jsonb, checksum text, producer_id bigint,
                    idempotency_key text)
            ), new_deliveries AS (
                INSERT INTO {Delivery._meta.db_table} (event_id, sink, status, attempts,
                    last_error, created_at, updated_at)
                SELECT event_id, sink, status, 0, '', now(), now()
                FROM json_to_recordset(%s::json) AS d(event_id bigint, sink text, status text)
            )
            UPDATE {SeqCounter._meta.db_table} SET last_seq = %s WHERE id = 1
            """,
            [event_rows, delivery_rows, last_seq],
        )


@dataclass(frozen=True)
class _NewDelivery:
    event_id: int
    sink: str
    status: str


def _deliveries_for(events: list[Event], *, table) -> list[_NewDelivery]:
    """One delivery per sink per event: pending where the route sends, else skipped."""
    deliveries = []
    for event in events:
        route = table.route_for(event.criticality)
        to_supabase = route.to_supabase and _supabase_sampled(seq=event.seq, route=route)
        deliveries.append(
            _NewDelivery(
                event.seq,
                Sink.WEBSOCKET,
                DeliveryStatus.PENDING if route.to_websocket else DeliveryStatus.SKIPPED,
            )
        )
        deliveries.append(
            _NewDelivery(
                event.seq,
                Sink.SUPABASE,
                DeliveryStatus.PENDING if to_supabase else DeliveryStatus.SKIPPED,
            )
        )
    return deliveries


def event_publish(
    *,
    event_type: str,
    source: str,
    payload: dict[str, Any] | None = None,
    occurred_at: datetime | str | None = None,
    idempotency_key: str | None = None,
    producer: Producer | None = None,
) -> PublishResult:
    """Publish one event; see ``event_publish_batch``."""
    data: dict[str, Any] = {"event_type": event_type, "source": source, "payload": payload or {}}
    if occurred_at is not None:
        data["occurred_at"] = (
            occurred_at.isoformat() if isinstance(occurred_at, datetime) else occurred_at
        )
    if idempotency_key is not None:
        data["idempotency_key"] = idempotency_key
    (result,) = event_publish_batch(events=[parse_event_input(data)], producer=producer)
    return result


# --- Producers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    producer: Producer
    token: str


class ProducerNameTaken(EventInputError):
    """``producer_create`` was given the name of an existing producer."""

    def __init__(self, *, name: str):
        super().__init__(field="name", message=f"a producer named {name!r} already exists")
        self.name = name


def producer_create(*, name: str) -> IssuedToken:
    """Create a producer and return its token, which is stored only as a hash."""
    name = name.strip()
    if not name or len(name) > 100:
        raise EventInputError(field="name", message="must be 1-100 characters")
    if Producer.objects.filter(name=name).exists():
        raise ProducerNameTaken(name=name)
    issued = tokens.token_new()
    producer = Producer.objects.create(
        name=name, token_prefix=issued.prefix, token_hash=tokens.token_hash(issued.token)
    )
    return IssuedToken(producer=producer, token=issued.token)


def producer_token_rotate(*, producer: Producer) -> IssuedToken:
    """Replace a producer's token; the old one stops working at once.

    The row is locked while it is rewritten, so of two concurrent rotations the token
    returned last is the one that works.
    """
    issued = tokens.token_new()
    with transaction.atomic():
        Producer.objects.select_for_update().filter(pk=producer.pk).update(
            token_prefix=issued.prefix, token_hash=tokens.token_hash(issued.token)
        )
    producer.token_prefix = issued.prefix
    producer.token_hash = tokens.token_hash(issued.token)
    return IssuedToken(producer=producer, token=issued.token)
