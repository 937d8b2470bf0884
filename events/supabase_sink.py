"""The Supabase half of the dual write.

Pending ``supabase`` deliveries are claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` in
seq order, written in one upsert on ``seq`` that ignores duplicates, and marked in the
same transaction. So:

- two workers never send the same delivery at once (each skips the other's rows);
- a worker killed mid-batch loses nothing: its transaction dies with it, the rows are
  pending again, and the next flush re-sends them; a re-sent row that already reached
  Supabase is ignored by the upsert, so nothing is duplicated either.

Writes go through a pybreaker circuit breaker whose state lives in Redis, shared by every
process. While it is open nothing is attempted: deliveries stay pending, publishing never
waits on Supabase, and the drain (Celery beat) sends everything once it closes.
"""

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from events import supabase_client
from events.models import BreakerStateChange, Delivery, DeliveryStatus, Event, Sink
from events.selectors import event_to_wire
from events.supabase_coalescing import (
    sink_window_ms,
    window_rows,
    write_slot_release,
    write_slot_wait,
)

logger = logging.getLogger(__name__)

BREAKER_NAME = "supabase_writes"
MAX_BACKOFF_SECONDS = 60


# --- The circuit breaker ------------------------------------------------------------------


class _BreakerRecorder(pybreaker.CircuitBreakerListener):
    """Records every state change and raises an alert for it."""

    def __init__(self) -> None:
        self.last_error = ""

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:1000]

    def state_change(self, cb, old_state, new_state) -> None:
        old_name = old_state.name if old_state is not None else ""
        new_name = new_state.name
        if old_name == new_name:
            return
        last_error = self.last_error
        # Recorded after the surrounding transaction commits (or now, outside one), so a
        # rolled-back flush does not take the record with it.
        transaction.on_commit(
            lambda: breaker_state_change_record(
                old_state=old_name, new_state=new_name, last_error=last_error
            )
        )


def breaker_state_change_record(*, old_state: str, new_state: str, last_error: str) -> None:
    BreakerStateChange.objects.create(
        breaker=BREAKER_NAME,
        old_state=old_state,
        new_state=new_state,
        last_error=last_error,
        process=f"{socket.gethostname()}:{os.getpid()}",
    )
    severity = "critical" if new_state == pybreaker.STATE_OPEN else "info"
    try:
        from rollout.services import alert_raise
    except ImportError:  # the alerting app is not installed yet
        logger.warning("Supabase breaker %s → %s (%s)", old_state, new_state, last_error)
        return
    alert_raise(
        kind=f"breaker_{new_state.replace('-', '_')}",
        severity=severity,
        message=f"Supabase write breaker went from {old_state} to {new_state}",
        figures={"last_error": last_error},
    )


def _is_client_error(exc: BaseException) -> bool:
    """A 4xx from Supabase says a row is bad, not that Supabase is down."""
    if not isinstance(exc, supabase_client.SupabaseAPIError):
        return False
    code = str(getattr(exc, "code", "") or "")
    return code.startswith("PGRST1") or code[:2] in {"22", "23"}


_breaker_lock = threading.Lock()
_breakers: dict[tuple, tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage]] = {}


def supabase_breaker() -> pybreaker.CircuitBreaker:
    return _breaker_and_storage()[0]


def supabase_breaker_rejects_calls() -> bool:
    """True while the breaker is open and its open time has not yet run out (after that,
    the next call is the half-open trial)."""
    breaker, storage = _breaker_and_storage()
    if breaker.current_state != pybreaker.STATE_OPEN:
        return False
    opened_at = storage.opened_at
    if opened_at is None:
        return False
    return datetime.now(UTC) < opened_at + timedelta(seconds=breaker.reset_timeout)


def _breaker_and_storage() -> tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage]:
    config = (
        settings.REDIS_URL,
        settings.SUPABASE_BREAKER_FAIL_MAX,
        settings.SUPABASE_BREAKER_RESET_SECONDS,
        settings.SUPABASE_BREAKER_NAMESPACE,
    )
    with _breaker_lock:
        cached = _breakers.get(config)
        if cached is None:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED,
                redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2),
                namespace=settings.SUPABASE_BREAKER_NAMESPACE,
            )
            breaker = pybreaker.CircuitBreaker(
                fail_max=settings.SUPABASE_BREAKER_FAIL_MAX,
                reset_timeout=settings.SUPABASE_BREAKER_RESET_SECONDS,
                exclude=[_is_client_error],
                listeners=[_BreakerRecorder()],
                state_storage=storage,
                name=BREAKER_NAME,
                throw_new_error_on_trip=False,
            )
            cached = (breaker, storage)
            _breakers.clear()
            _breakers[config] = cached
        return cached


def supabase_breaker_state() -> str:
    return supabase_breaker().current_state


# --- Writing ------------------------------------------------------------------------------


def event_to_supabase_row(event: Event) -> dict[str, Any]:
    """The row the sink (and a repair) writes: exactly the fields of the wire format, from
    an ``Event`` or anything with its fields (published_at is set by the database)."""
    return event_to_wire(event)


def _upsert(rows: list[dict[str, Any]]) -> None:
    (
        supabase_client.service_client()
        .table(supabase_client.MONITORING_EVENTS_TABLE)
        .upsert(rows, on_conflict="seq", ignore_duplicates=True, returning="minimal")
        .execute()
    )


# The claim in one statement: lock the oldest outstanding deliveries (SKIP LOCKED, so
# two writers never take the same one) and build their rows in PostgreSQL, which writes
# the wire format (``event_to_wire``: timestamps as format_timestamp spells them) as one
# JSON document at C speed. Loading 500 deliveries with their events as model objects
# and converting them back cost the writer more than the upsert itself.
_CLAIM_SQL = """
WITH claimed AS MATERIALIZED (
    SELECT id, event_id FROM {delivery}
    WHERE sink = %(sink)s AND ({outstanding})
    ORDER BY event_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT array_agg(c.id ORDER BY c.event_id),
    json_agg(json_build_object(
        'seq', e.seq,
        'event_type', e.event_type,
        'source', e.source,
        'criticality', e.criticality,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', {timestamp_format}),
        'received_at', to_char(e.received_at AT TIME ZONE 'UTC', {timestamp_format}),
        'payload', e.payload,
        'checksum', e.checksum
    ) ORDER BY c.event_id)::text
FROM claimed AS c JOIN {event} AS e ON e.seq = c.event_id
"""
_PENDING = "status = 'pending'"
_PENDING_OR_DUE = (
    "status = 'pending' OR (status = 'failed'"
    " AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s))"
)
# format_timestamp's form; YYYY pads to four digits as it does.
_TIMESTAMP_FORMAT = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""


def _claim_sql(*, include_failed: bool) -> str:
    return _CLAIM_SQL.format(
        delivery=Delivery._meta.db_table,
        event=Event._meta.db_table,
        outstanding=_PENDING_OR_DUE if include_failed else _PENDING,
        timestamp_format=_TIMESTAMP_FORMAT,
    )


def _claim(*, limit: int, include_failed: bool) -> tuple[list[int], list[dict[str, Any]]]:
    """Lock up to ``limit`` outstanding supabase deliveries (until the transaction ends)
    and return their ids and their events' rows, both in seq order."""
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(include_failed=include_failed),
            {"sink": Sink.SUPABASE, "limit": limit, "now": timezone.now()},
        )
        ids, rows = cursor.fetchone()
    if not ids:
        return [], []
    return ids, json.loads(rows)


def _mark_sent(ids: list[int], *, latency_ms: float) -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {Delivery._meta.db_table}
            SET status = %s, attempts = attempts + 1, sent_at = %s, updated_at = %s,
                next_attempt_at = NULL, last_error = '', write_latency_ms = %s
            WHERE id = ANY(%s)
            """,
            [DeliveryStatus.SENT, now, now, latency_ms, ids],
        )


def _mark_failed(ids: list[int], *, error: str) -> None:
    """Failed, to be retried after an exponential backoff on each one's attempts."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {Delivery._meta.db_table}
            SET status = %s, attempts = attempts + 1, last_error = %s, updated_at = %s,
                next_attempt_at = %s + make_interval(
                    secs => least(power(2, least(attempts + 1, 10)), %s))
            WHERE id = ANY(%s)
            """,
            [DeliveryStatus.FAILED, error[:1000], now, now, MAX_BACKOFF_SECONDS, ids],
        )


@dataclass(frozen=True)
class FlushResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    breaker_state: str = pybreaker.STATE_CLOSED
    outcome: str = "idle"  # idle | sent | failed | breaker_open | not_configured
    # The claim took as many as it was allowed to: more may be waiting. A flush that took
    # fewer saw everything committed before it began.
    full: bool = False


def supabase_sink_flush(*, limit: int | None = None, include_failed: bool = False) -> FlushResult:
    """Write one batch of outstanding supabase deliveries, oldest seq first."""
    if not supabase_client.supabase_configured():
        return FlushResult(outcome="not_configured")
    limit = limit or settings.SUPABASE_SINK_BATCH_SIZE
    breaker = supabase_breaker()
    if supabase_breaker_rejects_calls():
        return FlushResult(breaker_state=pybreaker.STATE_OPEN, outcome="breaker_open")
    # Under load, upserts are spaced by the coalescing window (events/supabase_coalescing):
    # what commits while this waits joins this upsert. Waited outside the transaction, so
    # no row is locked meanwhile.
    window_ms = sink_window_ms()
    slot = write_slot_wait(window_ms=window_ms)
    limit = max(limit, window_rows(window_ms=window_ms))

    with transaction.atomic():
        ids, rows = _claim(limit=limit, include_failed=include_failed)
        if not ids:
            write_slot_release(slot)  # no upsert, no message: the window is not spent
            return FlushResult(breaker_state=breaker.current_state)
        full = len(ids) >= limit
        started = time.perf_counter()
        try:
            breaker.call(_upsert, rows)
        except pybreaker.CircuitBreakerError:
            return FlushResult(
                claimed=len(ids), breaker_state=pybreaker.STATE_OPEN, outcome="breaker_open"
            )
        except Exception as exc:
            if _is_client_error(exc) and len(ids) > 1:
                return _flush_one_by_one(ids, rows, breaker=breaker, full=full)
            _mark_failed(ids, error=f"{type(exc).__name__}: {exc}")
            return FlushResult(
                claimed=len(ids),
                failed=len(ids),
                breaker_state=breaker.current_state,
                outcome="failed",
                full=full,
            )
        latency_ms = (time.perf_counter() - started) * 1000
        _mark_sent(ids, latency_ms=latency_ms)
    return FlushResult(
        claimed=len(ids),
        sent=len(ids),
        breaker_state=breaker.current_state,
        outcome="sent",
        full=full,
    )


def _flush_one_by_one(
    ids: list[int], rows: list[dict[str, Any]], *, breaker, full: bool
) -> FlushResult:
    """Isolate the rows Supabase refuses, so one bad row cannot block the rest."""
    sent = failed = 0
    for delivery_id, row in zip(ids, rows, strict=True):
        started = time.perf_counter()
        try:
            breaker.call(_upsert, [row])
        except pybreaker.CircuitBreakerError:
            break
        except Exception as exc:
            _mark_failed([delivery_id], error=f"{type(exc).__name__}: {exc}")
            failed += 1
            continue
        _mark_sent([delivery_id], latency_ms=(time.perf_counter() - started) * 1000)
        sent += 1
    return FlushResult(
        claimed=len(ids),
        sent=sent,
        failed=failed,
        breaker_state=breaker.current_state,
        outcome="sent" if sent else "failed",
        full=full,
    )


# --- Backfill (manage.py supabase_backfill) ----------------------------------------------


class BackfillError(Exception):
    pass


def _routed_to_supabase(*, from_seq: int, to_seq: int | None):
    queryset = Event.objects.filter(seq__gte=from_seq).exclude(
        deliveries__sink=Sink.SUPABASE, deliveries__status=DeliveryStatus.SKIPPED
    )
    if to_seq is not None:
        queryset = queryset.filter(seq__lte=to_seq)
    return queryset


def backfill_count(*, from_seq: int, to_seq: int | None) -> int:
    return _routed_to_supabase(from_seq=from_seq, to_seq=to_seq).count()


def backfill_batches(*, from_seq: int, to_seq: int | None, batch_size: int):
    """Seqs of routed events in the range, ``batch_size`` at a time, in order."""
    after = from_seq - 1
    while True:
        seqs = list(
            _routed_to_supabase(from_seq=after + 1, to_seq=to_seq)
            .order_by("seq")
            .values_list("seq", flat=True)[:batch_size]
        )
        if not seqs:
            return
        yield seqs
        after = seqs[-1]


def backfill_batch_send(*, seqs: list[int]) -> int:
    """Upsert these events (ignoring rows already there) and mark their deliveries sent."""
    events = list(Event.objects.filter(seq__in=seqs).order_by("seq"))
    started = time.perf_counter()
    try:
        supabase_breaker().call(_upsert, [event_to_supabase_row(event) for event in events])
    except Exception as exc:
        raise BackfillError(f"{type(exc).__name__}: {exc}") from exc
    ids = list(
        Delivery.objects.filter(event_id__in=seqs, sink=Sink.SUPABASE).values_list("id", flat=True)
    )
    _mark_sent(ids, latency_ms=(time.perf_counter() - started) * 1000)
    return len(events)
