"""Stored digests of sealed chunks, on both sides: what makes the hourly run cheap.

The seq line is cut into chunks of ``CHUNK_SEQS`` (1,024) seqs, chunk ``n`` holding seqs
``[n*1024 + 1, (n+1)*1024 + 1)``; the figure is fixed by the Supabase migration
``20261129000100_monitoring_events_sealed_digests.sql``. A chunk's digest is exactly the
one ``reconciliation.digest`` computes live (sum of row hashes modulo 2^64), so a stored
digest and a live one compare directly.

- **Supabase** keeps ``public.monitoring_events_digests``, written only by the table's
  statement-level triggers (every INSERT, UPDATE, DELETE, TRUNCATE, whatever the role)
  and by ``monitoring_events_digests_refresh``, which re-hashes rows and stores what they
  hash to. No API role can write the store, so an edit made with the secret key moves
  the stored digest of its chunk at once.
- **Locally**, ``SealedChunk`` holds each sealed chunk's digest, computed once when the
  chunk is sealed; the log's own triggers (``reconciliation/migrations/0006_…``) delete
  it on any write in the chunk, so the next run seals the chunk again.

Invariant: for a chunk nobody touched since both sides stored it, the two stored digests
are equal exactly when the chunk's rows are. What a store cannot see (a superuser writing
with triggers off, a restore from a backup) is found by the full pass, which re-hashes
the copy's rows and rewrites its store (and, with RECONCILIATION_FULL_PASS_REHASH_LOCAL,
the log's too).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from events.supabase_client import service_client
from reconciliation.digest import (
    LOCAL_CHUNK_DIGESTS_SQL,
    ChunkDigest,
    Meter,
    _read,
    chunk_digests_from_rpc,
)
from reconciliation.models import SealedChunk

CHUNK_SEQS = 1024
MAX_CHUNKS_PER_CALL = 1000  # monitoring_events_digests_refresh refuses more
MODULUS = 1 << 64
RPC_STORED = "monitoring_events_stored_digests"
RPC_REFRESH = "monitoring_events_digests_refresh"

_TABLE = SealedChunk._meta.db_table


def chunk_start(chunk_no: int) -> int:
    return chunk_no * CHUNK_SEQS + 1


def chunks_within(from_seq: int, to_seq: int) -> tuple[int, int]:
    """The whole chunks inside ``[from_seq, to_seq)``: (first, end) chunk numbers, end
    exclusive; first >= end when there is none."""
    first = -(-(from_seq - 1) // CHUNK_SEQS)
    end = (to_seq - 1) // CHUNK_SEQS
    return first, max(first, end)


@dataclass(frozen=True)
class RefreshedChunk:
    digest: ChunkDigest
    was_stale: bool


# --- local ----------------------------------------------------------------------------------

LOCAL_STORED_SQL = f"""
SELECT
    (%(first)s + ((chunk_no - %(first)s) / %(group)s) * %(group)s) * {CHUNK_SEQS} + 1,
    sum(row_count), (sum(digest) %% {MODULUS})::text, sum(skipped)
FROM {_TABLE}
WHERE chunk_no >= %(first)s AND chunk_no < %(end)s
GROUP BY 1
ORDER BY 1
"""

# Hash chunks [first, end) of the local log and store them (every chunk of the range gets
# a row, empty ones too, so that "not stored yet" is never mistaken for "empty").
LOCAL_SEAL_SQL = f"""
WITH live AS ({LOCAL_CHUNK_DIGESTS_SQL}),
wanted AS (
    SELECT c AS chunk_no, coalesce(l.row_count, 0) AS row_count,
           coalesce(l.digest, '0')::numeric AS digest, coalesce(l.skipped, 0) AS skipped
    FROM generate_series(%(first)s::bigint, %(end)s::bigint - 1) AS c
    LEFT JOIN live AS l ON l.chunk_start = c * {CHUNK_SEQS} + 1
),
previous AS (
    SELECT chunk_no, row_count, digest, skipped FROM {_TABLE}
    WHERE chunk_no >= %(first)s AND chunk_no < %(end)s
),
written AS (
    INSERT INTO {_TABLE} (chunk_no, row_count, digest, skipped, hashed_at)
    SELECT chunk_no, row_count, digest, skipped, %(now)s FROM wanted
    ON CONFLICT (chunk_no) DO UPDATE
        SET row_count = EXCLUDED.row_count, digest = EXCLUDED.digest,
            skipped = EXCLUDED.skipped, hashed_at = EXCLUDED.hashed_at
)
SELECT w.chunk_no * {CHUNK_SEQS} + 1, w.row_count, w.digest::text, w.skipped,
       p.chunk_no IS NOT NULL
           AND (p.row_count, p.digest, p.skipped) IS DISTINCT FROM (w.row_count, w.digest, w.skipped)
FROM wanted AS w LEFT JOIN previous AS p ON p.chunk_no = w.chunk_no
WHERE w.row_count > 0 OR w.skipped > 0 OR p.chunk_no IS NOT NULL
ORDER BY 1
"""  # noqa: E501


def local_stored(*, first: int, end: int, group: int, meter: Meter) -> list[ChunkDigest]:
    """Stored local digests of chunks [first, end), summed per ``group`` chunks."""
    if end <= first:
        return []
    with connection.cursor() as cursor:
        cursor.execute(LOCAL_STORED_SQL, {"first": first, "end": end, "group": group})
        rows = cursor.fetchall()
    meter.local()
    span = group * CHUNK_SEQS
    last = chunk_start(end)
    return [
        ChunkDigest(start, min(start + span, last), int(count), str(digest), int(skipped))
        for start, count, digest, skipped in rows
    ]


def local_seal(*, first: int, end: int, meter: Meter) -> list[RefreshedChunk]:
    """Hash chunks [first, end) of the local log, store them, and return them (non-empty
    ones, and any whose stored figures changed)."""
    if end <= first:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            LOCAL_SEAL_SQL,
            {
                "first": first,
                "end": end,
                "from_seq": chunk_start(first),
                "to_seq": chunk_start(end),
                "chunk_size": CHUNK_SEQS,
                "now": timezone.now(),
            },
        )
        rows = cursor.fetchall()
    meter.local()
    return [
        RefreshedChunk(
            ChunkDigest(start, start + CHUNK_SEQS, int(count), str(digest), int(skipped)),
            bool(stale),
        )
        for start, count, digest, skipped, stale in rows
    ]


def local_unsealed(*, first: int, end: int, meter: Meter) -> list[tuple[int, int]]:
    """Runs of chunk numbers in [first, end) the local store does not hold yet, as
    half-open (first, end) pairs (normally one run: the chunks sealed since last time)."""
    if end <= first:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT min(c), max(c) + 1 FROM (
                SELECT c, c - row_number() OVER (ORDER BY c) AS run
                FROM generate_series(%s::bigint, %s::bigint - 1) AS c
                WHERE NOT EXISTS (SELECT 1 FROM {_TABLE} AS s WHERE s.chunk_no = c)
            ) AS missing
            GROUP BY run
            ORDER BY 1
            """,
            [first, end],
        )
        rows = cursor.fetchall()
    meter.local()
    return [(int(a), int(b)) for a, b in rows]


# --- Supabase ---------------------------------------------------------------------------


def remote_stored(*, first: int, end: int, group: int, meter: Meter) -> list[ChunkDigest]:
    """Stored Supabase digests of chunks [first, end), summed per ``group`` chunks (one
    call: at most 1,000 groups)."""
    if end <= first:
        return []
    request = service_client().rpc(
        RPC_STORED, {"from_chunk": first, "to_chunk": end, "group_chunks": group}
    )
    rows = _read(request, meter).data or []
    meter.supabase()
    return chunk_digests_from_rpc(rows)


def remote_refresh(*, first: int, end: int, meter: Meter) -> list[RefreshedChunk]:
    """Re-hash Supabase chunks [first, end) (at most 1,000), store and return them."""
    if end <= first:
        return []
    # Retried like a read: a refresh stores only what the rows hash to, so twice is fine.
    request = service_client().rpc(RPC_REFRESH, {"from_chunk": first, "to_chunk": end})
    rows = _read(request, meter).data or []
    meter.supabase()
    return [
        RefreshedChunk(
            ChunkDigest(
                int(r["chunk_start"]), int(r["chunk_end"]), int(r["row_count"]), str(r["digest"])
            ),
            bool(r["was_stale"]),
        )
        for r in rows
    ]
