"""Chunk digests and row fetches on both sides: the local log and the Supabase copy.

The digest of a chunk is defined by the Supabase RPC ``monitoring_events_chunk_digests``
(``supabase/migrations/20261126000100_monitoring_events_chunk_digests.sql``): per row,
``hashtextextended`` (seed 0) of the canonical row text

    seq | event_type | source | criticality | occurred_at µs | received_at µs | payload | checksum

(times as integer microseconds since the epoch, payload as jsonb's text output), and per
chunk the sum of the row hashes modulo 2^64 as an unsigned decimal. ``LOCAL_ROW_HASH_SQL``
computes the same expression over ``events_event`` inside the local PostgreSQL, so equal
rows give equal digests (``tests/reconciliation/test_digest.py`` proves it on identical
data). Chunks are ``[from + k*size, from + (k+1)*size)`` clipped to ``[from, to)``, and
only non-empty ones are returned, on both sides.

The local side digests only the events that are *expected* in Supabase: an event whose
supabase delivery was ``skipped`` by its route is left out, so skipped events never make
a chunk differ.

Every call counts its round trip and the rows it brought back in a ``Meter``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from django.db import connection

from events.models import Delivery, DeliveryStatus, Event, Sink
from events.supabase_client import MONITORING_EVENTS_TABLE, service_client

RPC_CHUNK_DIGESTS = "monitoring_events_chunk_digests"
CONTENT_FIELDS = (
    "event_type",
    "source",
    "criticality",
    "occurred_at",
    "received_at",
    "payload",
    "checksum",
)
REMOTE_COLUMNS = "seq," + ",".join(CONTENT_FIELDS)
# Seqs per "in" filter / ranges per "or" filter: keeps request URLs well under 8 KiB.
MAX_SEQS_PER_REQUEST = 200
MAX_RANGES_PER_REQUEST = 60
# Every Supabase call here only reads, so a dropped connection (a keep-alive socket the
# server closed while we hashed) is retried; the client itself never retries.
READ_ATTEMPTS = 3

LOCAL_ROW_HASH_SQL = """hashtextextended(
    e.seq::text
    || '|' || e.event_type
    || '|' || e.source
    || '|' || e.criticality
    || '|' || round(date_part('epoch', e.occurred_at) * 1000000)::bigint::text
    || '|' || round(date_part('epoch', e.received_at) * 1000000)::bigint::text
    || '|' || e.payload::text
    || '|' || e.checksum,
    0
)"""

# Skipped events are joined (a hash of the few skipped deliveries), not filtered out, so
# that the same scan also counts them: ``skipped`` per chunk feeds expected_absent. The
# inner query hashes each row and hands on only (chunk, skipped, hash); OFFSET 0 keeps it
# from being flattened, so the aggregate is a small in-memory HashAggregate over narrow
# rows (not a sort of whole rows spilling to disk).
LOCAL_CHUNK_DIGESTS_SQL = f"""
SELECT
    h.chunk_start,
    count(*) FILTER (WHERE NOT h.skipped) AS row_count,
    ((coalesce(sum(h.row_hash), 0) %% 18446744073709551616 + 18446744073709551616)
        %% 18446744073709551616)::text AS digest,
    count(*) FILTER (WHERE h.skipped) AS skipped
FROM (
    SELECT
        %(from_seq)s + ((e.seq - %(from_seq)s) / %(chunk_size)s) * %(chunk_size)s AS chunk_start,
        s.event_id IS NOT NULL AS skipped,
        CASE WHEN s.event_id IS NULL THEN {LOCAL_ROW_HASH_SQL} END AS row_hash
    FROM {Event._meta.db_table} AS e
    LEFT JOIN (
        SELECT event_id FROM {Delivery._meta.db_table}
        WHERE sink = '{Sink.SUPABASE}' AND status = '{DeliveryStatus.SKIPPED}'
          AND event_id >= %(from_seq)s AND event_id < %(to_seq)s
    ) AS s ON s.event_id = e.seq
    WHERE e.seq >= %(from_seq)s AND e.seq < %(to_seq)s
    OFFSET 0
) AS h
GROUP BY 1
ORDER BY 1
"""

LOCAL_ROWS_SQL = f"""
SELECT e.seq, e.event_type, e.source, e.criticality, e.occurred_at, e.received_at,
       e.payload, e.checksum, d.status, d.attempts, d.last_error
FROM {{source}}
LEFT JOIN LATERAL (
    -- LIMIT keeps this a per-row index probe, whatever the planner guesses about e
    SELECT status, attempts, last_error FROM {Delivery._meta.db_table}
    WHERE event_id = e.seq AND sink = '{Sink.SUPABASE}'
    LIMIT 1
) AS d ON true
ORDER BY e.seq
"""


@dataclass(frozen=True)
class ChunkDigest:
    start: int
    end: int  # exclusive
    count: int
    digest: str
    # local only: events in the chunk whose delivery was skipped (not in count/digest)
    skipped: int = field(default=0, compare=False)


@dataclass
class Meter:
    """Round trips, and event rows fetched (chunk digests are not rows), per side. Safe to
    update from the remote worker threads."""

    round_trips_local: int = 0
    round_trips_supabase: int = 0
    rows_fetched_local: int = 0
    rows_fetched_supabase: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def local(self, rows: int = 0) -> None:
        with self._lock:
            self.round_trips_local += 1
            self.rows_fetched_local += rows

    def supabase(self, rows: int = 0) -> None:
        with self._lock:
            self.round_trips_supabase += 1
            self.rows_fetched_supabase += rows


@dataclass(frozen=True)
class EventRow:
    """One event as either side holds it (``delivery`` only on the local side)."""

    seq: int
    event_type: str
    source: str
    criticality: str
    occurred_at: datetime
    received_at: datetime
    payload: Any
    checksum: str
    delivery_status: str | None = None
    delivery_attempts: int | None = None
    delivery_error: str = ""

    def content(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_type": self.event_type,
            "source": self.source,
            "criticality": self.criticality,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "payload": self.payload,
        }


def _read(request, meter: Meter):
    """Execute a read-only PostgREST request, retrying transport failures."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return request.execute()
        except httpx.TransportError:
            if attempt == READ_ATTEMPTS - 1:
                raise
            meter.supabase()  # the failed attempt was a round trip too
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _clip(chunks: Iterable[tuple], *, to_seq: int, chunk_size: int) -> list[ChunkDigest]:
    return [
        ChunkDigest(start, min(start + chunk_size, to_seq), int(count), str(digest), int(skipped))
        for start, count, digest, skipped in chunks
    ]


# --- chunk digests ------------------------------------------------------------------------


def local_chunk_digests(
    *, from_seq: int, to_seq: int, chunk_size: int, meter: Meter
) -> list[ChunkDigest]:
    if to_seq <= from_seq:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            LOCAL_CHUNK_DIGESTS_SQL,
            {"from_seq": from_seq, "to_seq": to_seq, "chunk_size": chunk_size},
        )
        rows = cursor.fetchall()
    meter.local()  # digests, not rows: chunks are counted by the caller
    return _clip(rows, to_seq=to_seq, chunk_size=chunk_size)


def remote_chunk_digests(
    *, from_seq: int, to_seq: int, chunk_size: int, meter: Meter
) -> list[ChunkDigest]:
    if to_seq <= from_seq:
        return []
    request = service_client().rpc(
        RPC_CHUNK_DIGESTS, {"from_seq": from_seq, "to_seq": to_seq, "chunk_size": chunk_size}
    )
    rows = _read(request, meter).data or []
    meter.supabase()
    return chunk_digests_from_rpc(rows)


def chunk_digests_from_rpc(rows: list[dict]) -> list[ChunkDigest]:
    """The digests a Supabase digest RPC answered (JSON numbers and text)."""
    return [
        ChunkDigest(
            int(r["chunk_start"]), int(r["chunk_end"]), int(r["row_count"]), str(r["digest"])
        )
        for r in rows
    ]


# --- rows ------------------------------------------------------------------------------------


def _parse_time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _remote_row(raw: dict[str, Any]) -> EventRow:
    payload = raw["payload"]
    if isinstance(payload, str):  # a client that hands jsonb back as text
        payload = json.loads(payload)
    return EventRow(
        seq=int(raw["seq"]),
        event_type=raw["event_type"],
        source=raw["source"],
        criticality=raw["criticality"],
        occurred_at=_parse_time(raw["occurred_at"]),
        received_at=_parse_time(raw["received_at"]),
        payload=payload,
        checksum=raw["checksum"],
    )


def _local_rows(source: str, params: Sequence[Any], meter: Meter) -> list[EventRow]:
    with connection.cursor() as cursor:
        cursor.execute(LOCAL_ROWS_SQL.format(source=source), params)
        rows = cursor.fetchall()
    meter.local(len(rows))
    result = []
    for seq, event_type, source, crit, occurred, received, payload, checksum, *delivery in rows:
        if isinstance(payload, str):
            payload = json.loads(payload)
        status, attempts, last_error = delivery
        result.append(
            EventRow(
                seq=seq,
                event_type=event_type,
                source=source,
                criticality=crit,
                occurred_at=occurred,
                received_at=received,
                payload=payload,
                checksum=checksum,
                delivery_status=status,
                delivery_attempts=attempts,
                delivery_error=last_error or "",
            )
        )
    return result


def local_rows_in_ranges(*, ranges: Sequence[tuple[int, int]], meter: Meter) -> list[EventRow]:
    """Local events in the half-open seq ranges (one query)."""
    if not ranges:
        return []
    starts = [start for start, _ in ranges]
    ends = [end for _, end in ranges]
    # The ranges drive the join: one primary-key range scan per range (the LIMIT, which
    # never cuts anything since seqs are unique, stops the planner from guessing large
    # ranges and scanning the table instead).
    source = (
        "unnest(%s::bigint[], %s::bigint[]) AS r(a, b) CROSS JOIN LATERAL ("
        f"SELECT * FROM {Event._meta.db_table} AS inner_e "
        "WHERE inner_e.seq >= r.a AND inner_e.seq < r.b LIMIT r.b - r.a) AS e"
    )
    return _local_rows(source, [starts, ends], meter)


def local_rows_by_seq(*, seqs: Sequence[int], meter: Meter) -> list[EventRow]:
    if not seqs:
        return []
    source = f"unnest(%s::bigint[]) AS r(seq) JOIN {Event._meta.db_table} AS e ON e.seq = r.seq"
    return _local_rows(source, [sorted(set(seqs))], meter)


def remote_rows_in_ranges(*, ranges: Sequence[tuple[int, int]], meter: Meter) -> list[EventRow]:
    """Supabase rows in the half-open seq ranges: one request for ranges that together
    span at most the caller's batch (the caller batches)."""
    if not ranges:
        return []
    query = service_client().table(MONITORING_EVENTS_TABLE).select(REMOTE_COLUMNS)
    if len(ranges) == 1:
        start, end = ranges[0]
        query = query.gte("seq", start).lt("seq", end)
    else:
        query = query.or_(",".join(f"and(seq.gte.{a},seq.lt.{b})" for a, b in ranges))
    rows = _read(query.order("seq"), meter).data or []
    meter.supabase(len(rows))
    return [_remote_row(row) for row in rows]


def remote_rows_by_seq(*, seqs: Sequence[int], meter: Meter) -> list[EventRow]:
    result: list[EventRow] = []
    seqs = sorted(set(seqs))
    for index in range(0, len(seqs), MAX_SEQS_PER_REQUEST):
        batch = seqs[index : index + MAX_SEQS_PER_REQUEST]
        request = (
            service_client()
            .table(MONITORING_EVENTS_TABLE)
            .select(REMOTE_COLUMNS)
            .in_("seq", batch)
            .order("seq")
        )
        rows = _read(request, meter).data or []
        meter.supabase(len(rows))
        result.extend(_remote_row(row) for row in rows)
    return result


def remote_rows_after(
    *, after_seq: int, received_before: datetime, limit: int, meter: Meter
) -> list[EventRow]:
    """Supabase rows above the local log's highest seq, old enough to judge."""
    request = (
        service_client()
        .table(MONITORING_EVENTS_TABLE)
        .select(REMOTE_COLUMNS)
        .gt("seq", after_seq)
        .lte("received_at", received_before.isoformat())
        .order("seq")
        .limit(limit)
    )
    rows = _read(request, meter).data or []
    meter.supabase(len(rows))
    return [_remote_row(row) for row in rows]
