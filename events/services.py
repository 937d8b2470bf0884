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

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from events import sink_scheduling, sinks, tokens
from events.checksums import canonical_event_bytes_around_seq, event_checksum_of
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

    if _one_statement_possible(inputs, producer=producer, table=table, criticalities=criticalities):
        published = _publish_in_one_statement(inputs, criticalities, producer=producer, table=table)
        if published is not None:
            return [PublishResult(seq=e.seq, duplicate=False, event=e) for e in published]

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
            event = _event_new(item, criticality, producer=producer, received_at=received_at)
            event.seq = next_seq
            event.checksum = event_checksum_of(event)
            new_events.append(event)
            if item.idempotency_key:
                existing_by_key[item.idempotency_key] = event
            results.append(PublishResult(seq=event.seq, duplicate=False, event=event))

        if new_events:
            deliveries = _deliveries_for(new_events, table=table)
            _insert_rows(new_events, deliveries, last_seq=next_seq)
            _hand_off_after_commit(
                new_events,
                table=table,
                supabase_pending=any(
                    d.sink == Sink.SUPABASE and d.status == DeliveryStatus.PENDING
                    for d in deliveries
                ),
            )
    return results


def _event_new(
    item: EventInput, criticality: str, *, producer: Producer | None, received_at: datetime
) -> Event:
    """The event of one input, without its seq and checksum."""
    return Event(
        event_type=item.event_type,
        source=item.source,
        criticality=criticality,
        occurred_at=item.occurred_at or received_at,
        received_at=received_at,
        payload=item.payload,
        producer=producer,
        idempotency_key=item.idempotency_key,
    )


def _hand_off_after_commit(new_events: list[Event], *, table, supabase_pending: bool) -> None:
    """Once the events are committed: the legacy fan-out, and the Supabase writer's turn."""
    to_websocket: list[Event] = []
    passed_seqs: list[int] = []
    for event in new_events:
        if table.route_for(event.criticality).to_websocket:
            to_websocket.append(event)
        else:
            passed_seqs.append(event.seq)
    # The fan-out goes after the producer's answer when there is one to send first
    # (monitor_project/after_response.py): the events are durable here.
    transaction.on_commit(
        lambda: after_response(
            lambda: sinks.websocket_sink_send(events=to_websocket, passed_seqs=passed_seqs)
        )
    )
    if supabase_pending:
        transaction.on_commit(lambda: after_response(sink_scheduling.flush_schedule))


# --- One statement: the common publish in one round trip ----------------------------------
#
# The classic path above makes four round trips (BEGIN, the counter lock, the insert,
# COMMIT) because the checksum covers the seq, which Python learns only once it holds the
# lock. Here PostgreSQL finishes the checksum instead: Python writes each event's canonical
# bytes around a hole where the seq goes, and the statement that takes the counter row
# (an UPDATE, whose row lock lasts until commit, so seq order is still commit order)
# hashes head || seq || tail with sha256(): the same bytes, so the same checksum. In
# autocommit the statement is its own transaction, so a publish is one round trip.
#
# It stands aside (and the classic path runs) where it would need what only the classic
# path knows: an idempotency key already used (found, or raced by another publisher into
# the unique constraint), a key twice in one batch, a route that samples Supabase
# (the sample is drawn from the seq), or a counter row that is missing.


def _one_statement_possible(
    inputs: list[EventInput], *, producer: Producer | None, table, criticalities
) -> bool:
    keys = [item.idempotency_key for item in inputs if item.idempotency_key]
    if len(keys) != len(set(keys)):
        return False
    if keys and producer is None:
        return False  # no unique constraint catches a race on keys without a producer
    return all(_supabase_all_or_nothing(table.route_for(c)) for c in criticalities)


def _supabase_all_or_nothing(route: RouteDecision) -> bool:
    percent = route.supabase_sample_percent
    return not route.to_supabase or percent <= 0 or percent >= 100


def _publish_in_one_statement(
    inputs: list[EventInput], criticalities: list[str], *, producer: Producer | None, table
) -> list[Event] | None:
    """Store the events in one statement; None when the classic path must do it."""
    # Taken before the counter lock, not under it as on the classic path: under contention
    # a later seq may carry an instant a lock wait (milliseconds) earlier. Nothing orders
    # by received_at; reconciliation's grace period is minutes.
    received_at = timezone.now()
    events = [
        _event_new(item, criticality, producer=producer, received_at=received_at)
        for item, criticality in zip(inputs, criticalities, strict=True)
    ]
    event_rows = []
    delivery_rows = []
    for index, event in enumerate(events, start=1):
        head, tail = canonical_event_bytes_around_seq(event)
        event_rows.append(
            {
                "i": index,
                "event_type": event.event_type,
                "source": event.source,
                "criticality": event.criticality,
                "occurred_at": event.occurred_at.isoformat(),
                "received_at": event.received_at.isoformat(),
                "payload": event.payload,
                "head": head.decode("utf-8"),
                "tail": tail.decode("utf-8"),
                "producer_id": event.producer_id,
                "idempotency_key": event.idempotency_key,
            }
        )
        # The seq is not known yet: only routes that send all or nothing to Supabase come
        # here (_one_statement_possible), and their statuses do not depend on it.
        delivery_rows += [
            {"i": index, "sink": sink, "status": status}
            for sink, status in _delivery_statuses(event, table=table).items()
        ]
    keys = [event.idempotency_key for event in events if event.idempotency_key]
    try:
        if connection.in_atomic_block:
            # A savepoint: a refused statement must leave the caller's transaction usable.
            with transaction.atomic():
                stored = _insert_counted(event_rows, delivery_rows, producer=producer, keys=keys)
        else:
            stored = _insert_counted(event_rows, delivery_rows, producer=producer, keys=keys)
    except IntegrityError:
        # Another publisher committed one of these idempotency keys meanwhile: the classic
        # path finds it and answers duplicate or conflict. Nothing of this one was stored.
        return None
    if not stored:  # the statement stores every event of the batch or none
        return None
    for event, (seq, checksum) in zip(events, stored, strict=True):
        event.seq = seq
        event.checksum = checksum
    _hand_off_after_commit(
        events,
        table=table,
        supabase_pending=any(
            row["sink"] == Sink.SUPABASE and row["status"] == DeliveryStatus.PENDING
            for row in delivery_rows
        ),
    )
    return events


def _insert_counted(
    event_rows: list[dict], delivery_rows: list[dict], *, producer: Producer | None, keys
) -> list[tuple[int, str]]:
    """(seq, checksum) of each event stored, in order; none when a key was used already or
    the counter row is missing."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH used_key AS (
                SELECT 1 FROM {Event._meta.db_table}
                WHERE producer_id = %(producer)s AND idempotency_key = ANY(%(keys)s::text[])
                LIMIT 1
            ), counter AS (
                UPDATE {SeqCounter._meta.db_table} SET last_seq = last_seq + %(count)s
                WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM used_key)
                RETURNING last_seq - %(count)s AS seq_before
            ), numbered AS (
                SELECT counter.seq_before + r.i AS seq, r.*
                FROM counter, json_to_recordset(%(events)s::json) AS r(i bigint,
                    event_type text, source text, criticality text, occurred_at timestamptz,
                    received_at timestamptz, payload jsonb, head text, tail text,
                    producer_id bigint, idempotency_key text)
            ), new_events AS (
                INSERT INTO {Event._meta.db_table} (seq, event_type, source, criticality,
                    occurred_at, received_at, payload, checksum, producer_id, idempotency_key)
                SELECT seq, event_type, source, criticality, occurred_at, received_at,
                    payload,
                    encode(sha256(convert_to(head || seq::text || tail, 'UTF8')), 'hex'),
                    producer_id, idempotency_key
                FROM numbered
                RETURNING seq, checksum
            ), new_deliveries AS (
                INSERT INTO {Delivery._meta.db_table} (event_id, sink, status, attempts,
                    last_error, created_at, updated_at)
                SELECT numbered.seq, d.sink, d.status, 0, '', now(), now()
                FROM numbered JOIN json_to_recordset(%(deliveries)s::json)
                    AS d(i bigint, sink text, status text) ON d.i = numbered.i
            )
            SELECT seq, checksum FROM new_events ORDER BY seq
            """,
            {
                "producer": producer.pk if producer is not None else None,
                "keys": keys,
                "count": len(event_rows),
                "events": json.dumps(event_rows, ensure_ascii=False),
                "deliveries": json.dumps(delivery_rows),
            },
        )
        return cursor.fetchall()


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
    return [
        _NewDelivery(event.seq, sink, status)
        for event in events
        for sink, status in _delivery_statuses(event, table=table).items()
    ]


def _delivery_statuses(event: Event, *, table) -> dict[str, str]:
    """Each sink's delivery status for a new event: pending where its route sends, else
    skipped. A route that samples Supabase draws the sample from the event's seq."""
    route = table.route_for(event.criticality)
    to_supabase = route.to_supabase and _supabase_sampled(seq=event.seq, route=route)
    return {
        Sink.WEBSOCKET: DeliveryStatus.PENDING if route.to_websocket else DeliveryStatus.SKIPPED,
        Sink.SUPABASE: DeliveryStatus.PENDING if to_supabase else DeliveryStatus.SKIPPED,
    }


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
