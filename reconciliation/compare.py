"""The comparison itself: bisection over chunk digests, then row-by-row judgement.

``compare_range`` is pure reading (no writes anywhere): it returns a ``Comparison`` that
``reconciliation.services`` stores. The steps:

1. First level: the range is cut into windows of ``chunk_size * max_chunks_per_call``
   seqs; for each, ONE RPC call returns every chunk's (count, digest) on the Supabase side
   (calls run ``remote_concurrency`` at a time in worker threads) while the calling thread
   computes the same chunks locally. With the defaults, 1,000,000 seqs are 4 calls.
2. Unequal chunks are split ``fanout`` ways and re-digested; unequal chunks close to each
   other (``merge_gap_rows``) share one call, which never asks for more than
   ``max_chunks_per_call`` chunks. This repeats until a chunk holds ``leaf_rows`` seqs
   or fewer.
3. Leaf chunks are fetched on both sides (several ranges per request) and judged row by
   row into the categories of ``reconciliation.models.Category``. Should a leaf differ in
   digest while no field differs in Python (a number whose jsonb text differs but whose
   value does not), per-row digests decide.
4. When the range is open-ended, Supabase rows above the local log's highest seq are
   fetched too: they can only be extras.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from events.checksums import event_checksum
from events.models import Delivery, DeliveryStatus, Event, Sink
from reconciliation import digest, stored
from reconciliation.digest import ChunkDigest, EventRow, Meter
from reconciliation.models import Category

ProgressCallback = Callable[[str, int, int], None]
# Seqs one first-level local query covers (whole windows): a few scans of the delivery
# table instead of one per window, while a huge range still comes back in pieces.
LOCAL_ROWS_PER_QUERY = 1 << 20
FIELD_ORDER = digest.CONTENT_FIELDS


class TimeLimitExceeded(Exception):
    """The run's time limit passed; what was compared so far is kept."""


@dataclass(frozen=True)
class CompareConfig:
    chunk_size: int = 64
    max_chunks_per_call: int = 1000
    fanout: int = 16
    leaf_rows: int = 16
    fetch_budget_rows: int = 16384
    merge_gap_rows: int = 2048
    remote_concurrency: int = 2
    expected_absent_sample: int = 100
    tail_limit: int = 1000
    full_pass_rehash_local: bool = False


@dataclass(frozen=True)
class Finding:
    seq: int
    category: Category
    fields: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    criticality: str = ""


@dataclass
class Comparison:
    from_seq: int
    to_seq: int  # exclusive
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    chunks_compared: int = 0
    local_expected: int = 0  # events expected in Supabase in the range (digest counts)
    skipped_in_range: int = 0  # events whose supabase delivery was skipped by route
    young_in_range: int = 0
    young_seen: set[int] = field(default_factory=set)
    extras_judged: int = 0
    meter: Meter = field(default_factory=Meter)
    levels: int = 0
    chunks_rehashed: int = 0
    local_sealed: int = 0  # local chunks hashed because they had no stored digest
    # stored chunk digests found not to match their rows (and rewritten), per side
    stale_stored: dict[str, int] = field(default_factory=lambda: {"local": 0, "supabase": 0})
    phase_ms: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, started: float) -> None:
        elapsed = (time.monotonic() - started) * 1000
        self.phase_ms[phase] = round(self.phase_ms.get(phase, 0.0) + elapsed, 1)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.counts[finding.category.value] = self.counts.get(finding.category.value, 0) + 1

    @property
    def error_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.category != Category.EXPECTED_ABSENT]

    @property
    def judged(self) -> int:
        return max(self.local_expected - self.young_in_range, 0) + self.extras_judged

    @property
    def agreeing(self) -> int:
        return max(self.judged - len(self.error_findings), 0)


# --- row judgement --------------------------------------------------------------------------


def _micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _field_key(name: str, value: Any) -> Any:
    if name in ("occurred_at", "received_at"):
        return _micros(value)
    if name == "payload":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value).rstrip() if name == "checksum" else value


def differing_fields(local: EventRow, remote: EventRow) -> tuple[str, ...]:
    return tuple(
        name
        for name in FIELD_ORDER
        if _field_key(name, getattr(local, name)) != _field_key(name, getattr(remote, name))
    )


def checksum_valid(row: EventRow) -> bool:
    try:
        return event_checksum(**row.content()) == str(row.checksum).rstrip()
    except (TypeError, ValueError):
        return False


def judge_pair(
    *, seq: int, local: EventRow | None, remote: EventRow | None, cutoff: datetime
) -> Finding | None | str:
    """One seq: a ``Finding``, ``None`` when both sides agree, or ``"young"`` when the
    event is inside the grace period (not judged)."""
    if local is not None and local.received_at > cutoff:
        if remote is None and local.delivery_status in (
            DeliveryStatus.PENDING,
            DeliveryStatus.FAILED,
        ):
            return Finding(
                seq,
                Category.EXPECTED_ABSENT,
                details={"reason": f"delivery {local.delivery_status} within the grace period"},
                criticality=local.criticality,
            )
        return "young"
    if local is None and remote is None:
        return None
    if remote is None:
        if local.delivery_status == DeliveryStatus.SKIPPED:
            return Finding(
                seq,
                Category.EXPECTED_ABSENT,
                details={"reason": "delivery skipped by route"},
                criticality=local.criticality,
            )
        return Finding(
            seq,
            Category.MISSING_IN_SUPABASE,
            details={
                "delivery_status": local.delivery_status,
                "delivery_attempts": local.delivery_attempts,
                "delivery_error": local.delivery_error[:500],
                "local_checksum_valid": checksum_valid(local),
            },
            criticality=local.criticality,
        )
    if local is None:
        if remote.received_at > cutoff:
            return "young"
        return Finding(
            seq,
            Category.EXTRA_IN_SUPABASE,
            details={"supabase_checksum_valid": checksum_valid(remote)},
            criticality=remote.criticality,
        )
    fields = differing_fields(local, remote)
    if fields and local.delivery_status == DeliveryStatus.SKIPPED:
        # The copy should not hold this event at all (routed away), and what it holds is
        # not even the event: a row added in Supabase. (An identical copy is tolerated.)
        return Finding(
            seq,
            Category.EXTRA_IN_SUPABASE,
            fields=fields,
            details={
                "supabase_checksum_valid": checksum_valid(remote),
                "routed_away": True,
                **_values(local, remote, fields),
            },
            criticality=remote.criticality,
        )
    if not fields:
        # Identical copies: the checksum column is one of the fields, so Supabase's copy is
        # exactly as valid as the local event; a local event that does not hash to its own
        # checksum is only looked for where something differs (see docs).
        return None
    local_ok, remote_ok = checksum_valid(local), checksum_valid(remote)
    if not (local_ok and remote_ok):
        side = "both" if not (local_ok or remote_ok) else ("local" if not local_ok else "supabase")
        return Finding(
            seq,
            Category.CHECKSUM_INVALID,
            fields=fields,
            details={"side": side, **_values(local, remote, fields)},
            criticality=local.criticality,
        )
    if fields:
        return Finding(
            seq,
            Category.CONTENT_MISMATCH,
            fields=fields,
            details=_values(local, remote, fields),
            criticality=local.criticality,
        )
    return None


def _short(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return value if len(text) <= 500 else text[:500] + "…"


def _values(local: EventRow, remote: EventRow, fields: Sequence[str]) -> dict[str, Any]:
    return {
        "local": {name: _short(getattr(local, name)) for name in fields},
        "supabase": {name: _short(getattr(remote, name)) for name in fields},
    }


def judge_rows(
    *,
    seqs: Iterable[int],
    local_rows: Iterable[EventRow],
    remote_rows: Iterable[EventRow],
    cutoff: datetime,
) -> tuple[list[Finding], set[int], set[int]]:
    """Judge every seq; returns (findings, young seqs, seqs that agree)."""
    local = {row.seq: row for row in local_rows}
    remote = {row.seq: row for row in remote_rows}
    findings, young, agreeing = [], set(), set()
    for seq in sorted(set(seqs) | local.keys() | remote.keys()):
        outcome = judge_pair(seq=seq, local=local.get(seq), remote=remote.get(seq), cutoff=cutoff)
        if outcome == "young":
            young.add(seq)
        elif outcome is None:
            agreeing.add(seq)
        else:
            findings.append(outcome)
    return findings, young, agreeing


# --- bisection ------------------------------------------------------------------------------


def _unequal(local: list[ChunkDigest], remote: list[ChunkDigest]) -> list[tuple[int, int]]:
    """Chunks whose (count, digest) differ; a chunk one side does not list is empty there."""
    mine = {c.start: c for c in local}
    theirs = {c.start: c for c in remote}
    out = []
    for start in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(start), theirs.get(start)
        key_a = (a.count, a.digest) if a is not None and a.count else (0, "0")
        key_b = (b.count, b.digest) if b is not None and b.count else (0, "0")
        if key_a != key_b:
            out.append((start, (a or b).end))
    return out


def _spans(
    chunks: list[tuple[int, int]], *, sub_size: int, config: CompareConfig
) -> list[tuple[int, int]]:
    """Group unequal chunks into calls: neighbours closer than ``merge_gap_rows`` share a
    call as long as it asks for at most ``max_chunks_per_call`` sub-chunks."""
    spans: list[list[int]] = []
    limit = sub_size * config.max_chunks_per_call
    for start, end in chunks:
        if spans:
            span = spans[-1]
            if start - span[1] <= config.merge_gap_rows and end - span[0] <= limit:
                span[1] = end
                continue
        spans.append([start, end])
    return [(a, b) for a, b in spans]


class _Bisector:
    def __init__(
        self,
        *,
        config: CompareConfig,
        comparison: Comparison,
        deadline: float,
        progress: ProgressCallback | None,
        pool: ThreadPoolExecutor,
    ):
        self.config = config
        self.comparison = comparison
        self.meter = comparison.meter
        self.deadline = deadline
        self.progress = progress or (lambda phase, done, total: None)
        self.pool = pool
        self.touched: list[tuple[int, int]] = []  # sealed chunks whose stored digests differ

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeLimitExceeded("the run's time limit passed")

    def digest_spans(
        self,
        spans: list[tuple[int, int]],
        *,
        chunk_size: int,
        phase: str,
        local_group: int = 1,
    ) -> list[tuple[int, int]]:
        """Digest ``spans`` on both sides in ``chunk_size`` chunks; return unequal chunks.

        Supabase gets one call per span (a bounded answer each); locally, ``local_group``
        contiguous spans share one query (the chunk grid is the same).
        """
        futures = [
            self.pool.submit(
                digest.remote_chunk_digests,
                from_seq=a,
                to_seq=b,
                chunk_size=chunk_size,
                meter=self.meter,
            )
            for a, b in spans
        ]
        groups = [
            list(range(i, min(i + local_group, len(spans))))
            for i in range(0, len(spans), local_group)
        ]
        unequal: list[tuple[int, int]] = []
        try:
            for done, group in enumerate(groups, start=1):
                self.check_time()
                local = digest.local_chunk_digests(
                    from_seq=spans[group[0]][0],
                    to_seq=spans[group[-1]][1],
                    chunk_size=chunk_size,
                    meter=self.meter,
                )
                remote = [chunk for i in group for chunk in futures[i].result()]
                if phase == "hashing":
                    self.comparison.local_expected += sum(c.count for c in local)
                    self.comparison.skipped_in_range += sum(c.skipped for c in local)
                self.comparison.chunks_compared += len({c.start for c in local + remote})
                unequal.extend(_unequal(local, remote))
                self.progress(phase, done, len(groups))
        finally:
            for future in futures:
                future.cancel()
        return unequal

    def run(self, from_seq: int, to_seq: int) -> list[tuple[int, int]]:
        """Return the leaf ranges (half-open) whose rows must be compared."""
        config = self.config
        window = config.chunk_size * config.max_chunks_per_call
        spans = [(a, min(a + window, to_seq)) for a in range(from_seq, to_seq, window)]
        started = time.monotonic()
        unequal = self.digest_spans(
            spans,
            chunk_size=config.chunk_size,
            phase="hashing",
            local_group=max(1, LOCAL_ROWS_PER_QUERY // window),
        )
        self.comparison.chunks_rehashed += math.ceil((to_seq - from_seq) / stored.CHUNK_SEQS)
        self.comparison.timed("first level", started)
        self.comparison.levels = max(self.comparison.levels, 1)
        return self.bisect(unequal, size=config.chunk_size)

    def bisect(self, unequal: list[tuple[int, int]], *, size: int) -> list[tuple[int, int]]:
        """Split unequal chunks of ``size`` seqs until their rows are few enough to fetch;
        return the leaf ranges."""
        config = self.config
        leaves: list[tuple[int, int]] = []
        started = time.monotonic()
        levels = 0
        while unequal:
            self.check_time()
            # Fetching the rows of every unequal chunk is cheaper than hashing again once
            # they are few enough (a round trip fetches up to max_chunks_per_call rows).
            if sum(b - a for a, b in unequal) <= config.fetch_budget_rows:
                leaves.extend(unequal)
                break
            small = [(a, b) for a, b in unequal if b - a <= config.leaf_rows]
            leaves.extend(small)
            big = [(a, b) for a, b in unequal if b - a > config.leaf_rows]
            if not big:
                break
            size = max(config.leaf_rows, math.ceil(size / config.fanout))
            spans = _spans(big, sub_size=size, config=config)
            unequal = self.digest_spans(spans, chunk_size=size, phase="bisecting")
            levels += 1
        if levels:
            self.comparison.levels += levels
            self.comparison.timed("bisection", started)
        return sorted(leaves)

    # --- stored digests of sealed chunks (reconciliation.stored) ------------------------

    def run_stored(self, from_seq: int, to_seq: int, *, full: bool) -> list[tuple[int, int]]:
        """Leaf ranges of ``[from_seq, to_seq)`` using the sealed chunks' digests.

        The whole 1,024-seq chunks inside the range are compared by their stored digests
        (incremental: only chunks not sealed yet are hashed, locally) or re-hashed on both
        sides, which rewrites both stores (``full``). The edges that are not whole chunks
        are compared live, as ``run`` does.
        """
        first, end = stored.chunks_within(from_seq, to_seq)
        if end <= first:
            return self.run(from_seq, to_seq)
        started = time.monotonic()
        if full:
            unequal = self._stored_full(first, end)
            self.comparison.timed("full pass", started)
        else:
            unequal = self._stored_incremental(first, end)
            self.comparison.timed("stored digests", started)
        self.comparison.levels = 1
        self.touched = unequal
        leaves = self.bisect(unequal, size=stored.CHUNK_SEQS)
        edges = [
            (a, b)
            for a, b in ((from_seq, stored.chunk_start(first)), (stored.chunk_start(end), to_seq))
            if a < b
        ]
        for a, b in edges:
            leaves.extend(self.run(a, b))
        return sorted(leaves)

    def _count(self, local: list[ChunkDigest]) -> None:
        self.comparison.local_expected += sum(c.count for c in local)
        self.comparison.skipped_in_range += sum(c.skipped for c in local)

    def _stored_full(self, first: int, end: int) -> list[tuple[int, int]]:
        """Every chunk re-hashed in Supabase (its store rewritten), against the local
        stored digests, which the log's own triggers keep honest (a write in a sealed
        chunk drops its digest, and the chunk is sealed again here). With
        ``full_pass_rehash_local`` the local chunks are re-hashed too."""
        step = stored.MAX_CHUNKS_PER_CALL
        windows = [(a, min(a + step, end)) for a in range(first, end, step)]
        futures = [
            self.pool.submit(stored.remote_refresh, first=a, end=b, meter=self.meter)
            for a, b in windows
        ]
        unequal: list[tuple[int, int]] = []
        try:
            for done, (a, b) in enumerate(windows, start=1):
                self.check_time()
                if self.config.full_pass_rehash_local:
                    local = stored.local_seal(first=a, end=b, meter=self.meter)
                    self.comparison.stale_stored["local"] += sum(c.was_stale for c in local)
                    local_digests = [c.digest for c in local]
                else:
                    self._seal_missing(a, b)
                    local_digests = stored.local_stored(first=a, end=b, group=1, meter=self.meter)
                remote = futures[done - 1].result()
                self._count(local_digests)
                self.comparison.stale_stored["supabase"] += sum(c.was_stale for c in remote)
                self.comparison.chunks_compared += b - a
                self.comparison.chunks_rehashed += b - a
                unequal.extend(_unequal(local_digests, [c.digest for c in remote]))
                self.progress("full pass", done, len(windows))
        finally:
            for future in futures:
                future.cancel()
        return unequal

    def _seal_missing(self, first: int, end: int) -> None:
        """Hash and store the local chunks of [first, end) that have no stored digest:
        sealed since the last run, or dropped by a write (the log's triggers)."""
        step = stored.MAX_CHUNKS_PER_CALL
        for a, b in stored.local_unsealed(first=first, end=end, meter=self.meter):
            for c in range(a, b, step):
                self.check_time()
                stored.local_seal(first=c, end=min(c + step, b), meter=self.meter)
                self.comparison.local_sealed += min(c + step, b) - c

    def _stored_incremental(self, first: int, end: int) -> list[tuple[int, int]]:
        # 1. Seal the chunks the local store does not hold (normally the last hour's).
        step = stored.MAX_CHUNKS_PER_CALL
        sealed_before = self.comparison.local_sealed
        self._seal_missing(first, end)
        self.comparison.chunks_rehashed += self.comparison.local_sealed - sealed_before
        # 2. Both stores, summed per group of chunks: one call per 10^9 seqs (an answer
        #    holds at most 1,000 rows, Supabase's db-max-rows).
        group = step
        calls = [(a, min(a + group * step, end)) for a in range(first, end, group * step)]
        remote_calls = [
            self.pool.submit(stored.remote_stored, first=a, end=b, group=group, meter=self.meter)
            for a, b in calls
        ]
        local_groups = stored.local_stored(first=first, end=end, group=group, meter=self.meter)
        self._count(local_groups)
        self.comparison.chunks_compared += end - first
        remote_groups = [g for call in remote_calls for g in call.result()]
        unequal_groups = _unequal(local_groups, remote_groups)
        # 3. Within unequal groups, the chunks whose stored digests differ.
        unequal: list[tuple[int, int]] = []
        for done, (a, b) in enumerate(unequal_groups, start=1):
            self.check_time()
            g_first, g_end = (a - 1) // stored.CHUNK_SEQS, (b - 1) // stored.CHUNK_SEQS
            remote = self.pool.submit(
                stored.remote_stored, first=g_first, end=g_end, group=1, meter=self.meter
            )
            local = stored.local_stored(first=g_first, end=g_end, group=1, meter=self.meter)
            unequal.extend(_unequal(local, remote.result()))
            self.progress("stored digests", done, len(unequal_groups))
        self.comparison.chunks_rehashed += len(unequal)
        return unequal

    def refresh_stored(self, chunks: list[tuple[int, int]]) -> None:
        """Re-hash the given sealed chunks (seq ranges) on both sides and store them."""
        numbers = sorted({(a - 1) // stored.CHUNK_SEQS for a, _ in chunks})
        runs: list[list[int]] = []
        for n in numbers:
            if runs and n == runs[-1][1] and n - runs[-1][0] < stored.MAX_CHUNKS_PER_CALL:
                runs[-1][1] = n + 1
            else:
                runs.append([n, n + 1])
        for a, b in runs:
            remote = stored.remote_refresh(first=a, end=b, meter=self.meter)
            local = stored.local_seal(first=a, end=b, meter=self.meter)
            self.comparison.stale_stored["local"] += sum(c.was_stale for c in local)
            self.comparison.stale_stored["supabase"] += sum(c.was_stale for c in remote)


def _batches(ranges: list[tuple[int, int]], *, max_rows: int) -> list[list[tuple[int, int]]]:
    batches: list[list[tuple[int, int]]] = []
    rows = 0
    for start, end in ranges:
        if (
            batches
            and rows + (end - start) <= max_rows
            and (len(batches[-1]) < digest.MAX_RANGES_PER_REQUEST)
        ):
            batches[-1].append((start, end))
            rows += end - start
        else:
            batches.append([(start, end)])
            rows = end - start
    return batches


def _row_digest_check(ranges: list[tuple[int, int]], *, meter: Meter) -> list[int]:
    """Seqs whose per-row digests differ (chunk size 1) in the given leaf ranges."""
    seqs: list[int] = []
    for a, b in ranges:
        local = digest.local_chunk_digests(from_seq=a, to_seq=b, chunk_size=1, meter=meter)
        remote = digest.remote_chunk_digests(from_seq=a, to_seq=b, chunk_size=1, meter=meter)
        seqs.extend(start for start, _ in _unequal(local, remote))
    return seqs


def _local_young_count(*, from_seq: int, to_seq: int, cutoff: datetime, meter: Meter) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*) FROM {Event._meta.db_table} AS e
            WHERE e.seq >= %s AND e.seq < %s AND e.received_at > %s
              AND NOT EXISTS (
                  SELECT 1 FROM {Delivery._meta.db_table} AS d
                  WHERE d.event_id = e.seq AND d.sink = %s AND d.status = %s
              )
            """,
            [from_seq, to_seq, cutoff, Sink.SUPABASE, DeliveryStatus.SKIPPED],
        )
        (count,) = cursor.fetchone()
    meter.local()
    return count


def _expected_absent(
    *,
    from_seq: int,
    to_seq: int,
    cutoff: datetime,
    sample: int,
    skipped_total: int,
    meter: Meter,
) -> tuple[int, list[Finding]]:
    """Skipped deliveries in the range (``skipped_total``, counted by the first-level
    digests), and pending/failed ones still inside the grace period (anywhere from
    ``from_seq`` on): never errors; counted, and a sample kept."""
    queries = [
        # still on its way, inside the grace period (the received_at index finds them)
        (
            "e.received_at > %s AND e.seq >= %s AND d.status IN (%s, %s)",
            [cutoff, from_seq, DeliveryStatus.PENDING, DeliveryStatus.FAILED],
            "count(*) OVER ()",
        ),
    ]
    if skipped_total:
        # Only a sample: the count is known already, and counting again here would read
        # every skipped delivery of the history on every run.
        queries.append(
            (
                "d.event_id >= %s AND d.event_id < %s AND d.status = %s",
                [from_seq, to_seq, DeliveryStatus.SKIPPED],
                "0",
            )
        )
    total = skipped_total
    rows: list[tuple] = []
    for condition, params, counted in queries:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT e.seq, e.criticality, d.status, {counted} AS total
                FROM {Delivery._meta.db_table} AS d
                JOIN {Event._meta.db_table} AS e ON e.seq = d.event_id
                WHERE d.sink = %s AND {condition}
                ORDER BY e.seq
                LIMIT %s
                """,
                [Sink.SUPABASE, *params, max(sample, 1)],
            )
            found = cursor.fetchall()
        meter.local()
        if found and found[0][2] != DeliveryStatus.SKIPPED:
            total += found[0][3]
        rows.extend(found)
    rows = sorted(rows)[:sample]
    findings = [
        Finding(
            seq,
            Category.EXPECTED_ABSENT,
            details={
                "reason": "delivery skipped by route"
                if status == DeliveryStatus.SKIPPED
                else f"delivery {status} within the grace period"
            },
            criticality=criticality,
        )
        for seq, criticality, status, _ in rows
    ]
    return total, findings


def compare_range(
    *,
    from_seq: int,
    to_seq: int,
    cutoff: datetime,
    open_ended: bool,
    local_max_seq: int,
    config: CompareConfig,
    deadline: float,
    progress: ProgressCallback | None = None,
    comparison: Comparison | None = None,
    mode: str = "live",
) -> Comparison:
    """Compare ``[from_seq, to_seq)``; events received after ``cutoff`` are not judged.

    ``mode``: ``"live"`` hashes every row of the range on both sides; ``"incremental"``
    compares the stored digests of the sealed chunks inside the range and hashes only the
    chunks not sealed yet, those whose stored digests differ, and the edges;
    ``"full"`` re-hashes the sealed chunks in Supabase, rewriting its store, and compares
    them with the local stored digests (``full_pass_rehash_local``: re-hashed too)
    (``reconciliation.stored``). All three find the same differences in rows the stores
    saw written.

    ``comparison`` may be passed in so that a caller keeps the figures gathered before a
    ``TimeLimitExceeded``.
    """
    comparison = comparison or Comparison(from_seq=from_seq, to_seq=to_seq)
    meter = comparison.meter
    with ThreadPoolExecutor(
        max_workers=max(1, config.remote_concurrency), thread_name_prefix="reconcile"
    ) as pool:
        bisector = _Bisector(
            config=config, comparison=comparison, deadline=deadline, progress=progress, pool=pool
        )
        if to_seq <= from_seq:
            leaves = []
        elif mode == "live":
            leaves = bisector.run(from_seq, to_seq)
        else:
            leaves = bisector.run_stored(from_seq, to_seq, full=mode == "full")

    # Leaf rows, both sides, judged one by one.
    started = time.monotonic()
    batches = _batches(leaves, max_rows=config.max_chunks_per_call)
    findings: list[Finding] = []
    young: set[int] = set()
    for index, batch in enumerate(batches):
        bisector.check_time()
        local_rows = digest.local_rows_in_ranges(ranges=batch, meter=meter)
        remote_rows = digest.remote_rows_in_ranges(ranges=batch, meter=meter)
        batch_findings, batch_young, _ = judge_rows(
            seqs=(), local_rows=local_rows, remote_rows=remote_rows, cutoff=cutoff
        )
        found = {f.seq for f in batch_findings} | batch_young
        # Skipped events present in a leaf are counted by _expected_absent already.
        batch_findings = [
            f
            for f in batch_findings
            if not (
                f.category == Category.EXPECTED_ABSENT
                and f.details.get("reason") == "delivery skipped by route"
            )
        ]
        silent = [(a, b) for a, b in batch if not any(a <= seq < b for seq in found)]
        if silent:
            # The digests differ but no field does as Python sees it: let per-row
            # digests name the seqs.
            by_seq = {row.seq: row for row in local_rows}
            for seq in _row_digest_check(silent, meter=meter):
                local = by_seq.get(seq)
                if local is not None and local.delivery_status == DeliveryStatus.SKIPPED:
                    continue  # a skipped event Supabase holds anyway, and holds equal
                criticality = local.criticality if local else ""
                batch_findings.append(
                    Finding(
                        seq,
                        Category.CONTENT_MISMATCH,
                        fields=("payload",),
                        details={"note": "row digests differ (jsonb text), values compare equal"},
                        criticality=criticality,
                    )
                )
        findings.extend(batch_findings)
        young |= batch_young
        if progress:
            progress("comparing rows", index + 1, len(batches))

    if batches:
        comparison.timed("rows", started)

    # Sealed chunks whose stored digests differed while their rows agree: a store that
    # missed a write (a superuser's, with triggers off) or a local event edited in place.
    # Rewrite both stores so that the next hourly run does not look again.
    seen = [f.seq for f in findings] + sorted(young)
    stale = [(a, b) for a, b in bisector.touched if not any(a <= seq < b for seq in seen)]
    if stale and mode == "incremental":
        started = time.monotonic()
        bisector.check_time()
        bisector.refresh_stored(stale)
        comparison.timed("stored digests rewritten", started)

    # Open-ended: Supabase rows above the local log's highest seq can only be extras.
    started = time.monotonic()
    if open_ended:
        bisector.check_time()
        tail = digest.remote_rows_after(
            after_seq=max(local_max_seq, to_seq - 1),
            received_before=cutoff,
            limit=config.tail_limit,
            meter=meter,
        )
        if tail:
            present = {
                r.seq for r in digest.local_rows_by_seq(seqs=[r.seq for r in tail], meter=meter)
            }
            for row in tail:
                if row.seq not in present:
                    findings.append(
                        Finding(
                            row.seq,
                            Category.EXTRA_IN_SUPABASE,
                            details={
                                "supabase_checksum_valid": checksum_valid(row),
                                "above_local_log": True,
                            },
                            criticality=row.criticality,
                        )
                    )

    for finding in findings:
        comparison.add(finding)
        if finding.category == Category.EXTRA_IN_SUPABASE:
            comparison.extras_judged += 1
    comparison.young_seen = young

    # Counted, never judged.
    comparison.young_in_range = _local_young_count(
        from_seq=from_seq, to_seq=to_seq, cutoff=cutoff, meter=meter
    )
    expected_total, sample = _expected_absent(
        from_seq=from_seq,
        to_seq=to_seq,
        cutoff=cutoff,
        sample=config.expected_absent_sample,
        skipped_total=comparison.skipped_in_range,
        meter=meter,
    )
    already = {f.seq for f in comparison.findings}
    for finding in sample:
        if finding.seq not in already:
            comparison.findings.append(finding)
    counted = sum(1 for f in comparison.findings if f.category == Category.EXPECTED_ABSENT)
    comparison.counts[Category.EXPECTED_ABSENT.value] = max(expected_total, counted)
    if not comparison.counts[Category.EXPECTED_ABSENT.value]:
        del comparison.counts[Category.EXPECTED_ABSENT.value]
    comparison.timed("tail and counts", started)
    return comparison
