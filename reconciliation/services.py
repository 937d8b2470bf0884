"""Writes of the reconciliation app: runs, and the repair of what they find.

``reconciliation_run`` compares a seq range of the local log with the Supabase copy
(``reconciliation.compare``), stores a ``ReconciliationRun`` with its ``Discrepancy`` rows,
and raises alerts. Runs never overlap: the comparison happens under a session-level
PostgreSQL advisory lock, and a run that cannot take it is stored as ``skipped`` (naming
the run in progress) instead of waiting. A run has a time limit; when it passes, the run
is stored as ``timed_out`` with what it compared so far.

``reconciliation_repair`` is separate and explicit: it re-sends missing and mismatched rows
from the local log (upsert on seq), deletes extras only when asked, then re-checks exactly
those seqs and marks the discrepancies it fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from events.supabase_client import MONITORING_EVENTS_TABLE, service_client, supabase_configured
from events.supabase_sink import event_to_supabase_row
from reconciliation import selectors
from reconciliation.compare import (
    CompareConfig,
    Comparison,
    ProgressCallback,
    TimeLimitExceeded,
    checksum_valid,
    compare_range,
    judge_rows,
)
from reconciliation.conf import reconciliation_setting
from reconciliation.digest import Meter, local_rows_by_seq, remote_rows_by_seq
from reconciliation.models import (
    ERROR_CATEGORIES,
    Category,
    Discrepancy,
    ReconciliationRun,
    RunMode,
    RunStatus,
    RunTrigger,
)

logger = logging.getLogger(__name__)

# pg_advisory_lock key: "RECONCIL" as a big-endian bigint; one lock for runs and repairs.
ADVISORY_LOCK_KEY = int.from_bytes(b"RECONCIL", "big")


class ReconciliationBusy(Exception):
    """Another run or repair holds the reconciliation lock."""


class InvalidRange(ValueError):
    """A seq range that cannot be compared."""


@contextmanager
def reconciliation_lock() -> Iterator[bool]:
    """Try the advisory lock on this connection; yield whether it was taken."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        (acquired,) = cursor.fetchone()
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


def _config() -> CompareConfig:
    return CompareConfig(
        chunk_size=int(reconciliation_setting("RECONCILIATION_CHUNK_SIZE")),
        max_chunks_per_call=int(reconciliation_setting("RECONCILIATION_MAX_CHUNKS_PER_CALL")),
        fanout=int(reconciliation_setting("RECONCILIATION_FANOUT")),
        leaf_rows=int(reconciliation_setting("RECONCILIATION_LEAF_ROWS")),
        fetch_budget_rows=int(reconciliation_setting("RECONCILIATION_FETCH_BUDGET_ROWS")),
        merge_gap_rows=int(reconciliation_setting("RECONCILIATION_MERGE_GAP_ROWS")),
        remote_concurrency=int(reconciliation_setting("RECONCILIATION_REMOTE_CONCURRENCY")),
        expected_absent_sample=int(reconciliation_setting("RECONCILIATION_EXPECTED_ABSENT_SAMPLE")),
        full_pass_rehash_local=bool(
            reconciliation_setting("RECONCILIATION_FULL_PASS_REHASH_LOCAL")
        ),
    )


def _validate_range(from_seq: int | None, to_seq: int | None) -> None:
    if from_seq is not None and from_seq < 1:
        raise InvalidRange(f"from_seq must be 1 or more, not {from_seq}")
    if to_seq is not None and to_seq < 1:
        raise InvalidRange(f"to_seq must be 1 or more, not {to_seq}")
    if from_seq is not None and to_seq is not None and to_seq < from_seq:
        raise InvalidRange(f"to_seq ({to_seq}) is below from_seq ({from_seq})")


def _store(run: ReconciliationRun, comparison: Comparison, started: float) -> None:
    cap = int(reconciliation_setting("RECONCILIATION_MAX_DISCREPANCIES"))
    errors = [f for f in comparison.findings if f.category in ERROR_CATEGORIES]
    absent = [f for f in comparison.findings if f.category not in ERROR_CATEGORIES]
    Discrepancy.objects.bulk_create(
        [
            Discrepancy(
                run=run,
                seq=f.seq,
                category=f.category,
                fields=list(f.fields),
                details=f.details,
                criticality=f.criticality or "",
            )
            for f in errors[:cap] + absent
        ],
        ignore_conflicts=True,
    )
    meter = comparison.meter
    run.to_seq = comparison.to_seq - 1
    run.chunks_compared = comparison.chunks_compared
    run.chunks_rehashed = comparison.chunks_rehashed
    run.stored_digests_rewritten = {k: v for k, v in comparison.stale_stored.items() if v}
    run.round_trips_local = meter.round_trips_local
    run.round_trips_supabase = meter.round_trips_supabase
    run.rows_fetched_local = meter.rows_fetched_local
    run.rows_fetched_supabase = meter.rows_fetched_supabase
    run.counts = dict(sorted(comparison.counts.items()))
    run.phase_ms = comparison.phase_ms
    run.discrepancy_count = len(errors)
    run.events_judged = comparison.judged
    run.events_agreeing = comparison.agreeing
    run.events_not_judged = comparison.young_in_range
    run.consistency_rate = comparison.agreeing / comparison.judged if comparison.judged else 1.0
    run.finished_at = timezone.now()
    run.duration_ms = (time.monotonic() - started) * 1000


def _alerts_raise(run: ReconciliationRun, comparison: Comparison) -> None:
    try:
        from rollout.services import alert_raise
    except ImportError:  # the rollout app without alerts: log, never fail the run
        logger.error("reconciliation run %s: rollout.services.alert_raise is missing", run.pk)
        return
    critical = [
        f
        for f in comparison.findings
        if f.category in ERROR_CATEGORIES and f.criticality == "critical"
    ]
    figures = {
        "run_id": run.pk,
        "from_seq": run.from_seq,
        "to_seq": run.to_seq,
        "counts": run.counts,
        "consistency_rate": run.consistency_rate,
    }
    if critical:
        seqs = sorted(f.seq for f in critical)
        alert_raise(
            kind="reconciliation_discrepancy",
            severity="critical",
            message=(
                f"Reconciliation run #{run.pk} found {len(critical)} discrepancies on "
                f"critical events (seqs {', '.join(map(str, seqs[:10]))}"
                f"{', …' if len(seqs) > 10 else ''})."
            ),
            figures={**figures, "critical_seqs": seqs[:100]},
        )
    if run.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        # A run that could not finish proves nothing: say so (once per open alert).
        alert_raise(
            kind="reconciliation_failed",
            severity="warning",
            message=f"Reconciliation run #{run.pk} did not finish ({run.status}): {run.error}",
            figures=figures,
        )
        if run.status == RunStatus.FAILED:
            return
    threshold = float(reconciliation_setting("RECONCILIATION_CONSISTENCY_THRESHOLD"))
    if run.consistency_rate is not None and run.consistency_rate < threshold:
        alert_raise(
            kind="reconciliation_consistency",
            severity="critical",
            message=(
                f"Reconciliation run #{run.pk}: consistency {run.consistency_rate:.4%} is under "
                f"{threshold:.4%} ({run.discrepancy_count} of {run.events_judged} events differ)."
            ),
            figures={**figures, "threshold": threshold},
        )


def reconciliation_run(
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    trigger: str = RunTrigger.MANUAL,
    full: bool = False,
    progress: ProgressCallback | None = None,
) -> ReconciliationRun:
    """Compare seqs ``from_seq .. to_seq`` (inclusive) now and store the run.

    Without ``to_seq`` the range ends at the newest event older than the grace period,
    and Supabase rows above the local log's highest seq are judged as well (extras).
    By default the run is incremental: sealed chunks are compared by the digests both
    sides keep (``reconciliation.stored``), and only chunks sealed since the last run or
    whose stored digests differ are hashed. ``full`` re-hashes every chunk of the range in
    Supabase, rewriting its store, against the local stored digests (re-hashed too with
    ``RECONCILIATION_FULL_PASS_REHASH_LOCAL``): the rolling full pass.
    Returns the run: ``clean``, ``discrepancies``, ``skipped`` (lock taken), ``timed_out``
    or ``failed`` (with ``error``).
    """
    _validate_range(from_seq, to_seq)
    grace = float(reconciliation_setting("RECONCILIATION_GRACE_SECONDS"))
    time_limit = float(reconciliation_setting("RECONCILIATION_TIME_LIMIT_SECONDS"))
    started = time.monotonic()
    now = timezone.now()
    run = ReconciliationRun.objects.create(
        trigger=trigger,
        status=RunStatus.RUNNING,
        from_seq=from_seq or 1,
        to_seq=to_seq,
        mode=RunMode.FULL if full else RunMode.INCREMENTAL,
        grace_seconds=grace,
        started_at=now,
    )
    with reconciliation_lock() as acquired:
        if not acquired:
            other = selectors.run_running()
            holder = f"run #{other.pk}" if other and other.pk != run.pk else "a repair"
            run.status = RunStatus.SKIPPED
            run.error = f"another reconciliation ({holder}) is in progress; this run was skipped"
            run.finished_at = timezone.now()
            run.duration_ms = (time.monotonic() - started) * 1000
            run.save()
            return run
        # The run's clock starts once it holds the lock, so runs' [started_at,
        # finished_at] never overlap (finished_at is stored before the lock is released).
        now = run.started_at = timezone.now()
        # We hold the lock, so any other "running" run died without finishing.
        ReconciliationRun.objects.filter(status=RunStatus.RUNNING).exclude(pk=run.pk).update(
            status=RunStatus.FAILED, error="interrupted (its process ended before it finished)"
        )
        cutoff = now - timedelta(seconds=grace)
        open_ended = to_seq is None
        end = selectors.local_judgeable_to_seq(cutoff=cutoff) if open_ended else to_seq + 1
        begin = run.from_seq
        end = max(end, begin)
        comparison = Comparison(from_seq=begin, to_seq=end)
        run.to_seq = end - 1
        try:
            compare_range(
                from_seq=begin,
                to_seq=end,
                cutoff=cutoff,
                open_ended=open_ended,
                local_max_seq=selectors.local_max_seq(),
                config=_config(),
                deadline=started + time_limit,
                progress=progress,
                comparison=comparison,
                mode=run.mode,
            )
        except TimeLimitExceeded:
            run.status = RunStatus.TIMED_OUT
            run.error = f"time limit of {time_limit:g} s passed; figures are partial"
        except Exception as exc:
            logger.exception("reconciliation run %s failed", run.pk)
            run.status = RunStatus.FAILED
            run.error = f"{type(exc).__name__}: {exc}"[:2000]
        with transaction.atomic():
            _store(run, comparison, started)
            if run.status == RunStatus.RUNNING:
                run.status = RunStatus.DISCREPANCIES if run.discrepancy_count else RunStatus.CLEAN
            run.save()
    if run.status != RunStatus.SKIPPED:
        _alerts_raise(run, comparison)
    return run


class ReconciliationUnavailable(Exception):
    """A run cannot be started now (Supabase not configured); the message says why."""


def reconciliation_run_enqueue() -> None:
    """Queue a manual run (``reconciliation.run_manual``) once the caller's transaction
    commits. Refused with ``ReconciliationUnavailable`` when Supabase is not configured
    and ``ReconciliationBusy`` while a run or a repair holds the lock, so that a click
    does not queue a run that could only fail or be skipped. (A run that starts between
    this check and the task is still safe: the task's run is then recorded as skipped.)
    """
    from reconciliation.tasks import run_manual_task  # tasks import this module

    if not supabase_configured():
        raise ReconciliationUnavailable(
            "Supabase is not configured (SUPABASE_* settings); there is nothing to compare."
        )
    with reconciliation_lock() as acquired:
        if not acquired:
            running = selectors.run_running()
            what = f"run #{running.pk}" if running else "a repair"
            raise ReconciliationBusy(
                f"Another reconciliation ({what}) is in progress; try again when it ends."
            )
    transaction.on_commit(run_manual_task.delay)


def reconciliation_run_hourly(*, progress: ProgressCallback | None = None) -> ReconciliationRun:
    """The whole log, incrementally: the stored digests of every sealed chunk compared,
    the chunks sealed since the last run and any whose digests differ hashed, and the
    newest events (not a whole chunk yet) compared row by row."""
    return reconciliation_run(trigger=RunTrigger.HOURLY, progress=progress)


def reconciliation_run_recheck(*, progress: ProgressCallback | None = None) -> ReconciliationRun:
    """The rolling full pass: the next ``RECONCILIATION_RECHECK_ROWS`` seqs of the log,
    oldest first, wrapping around, re-hashed in Supabase (which also rewrites its stored
    digests)."""
    rows = int(reconciliation_setting("RECONCILIATION_RECHECK_ROWS"))
    grace = float(reconciliation_setting("RECONCILIATION_GRACE_SECONDS"))
    watermark = selectors.local_judgeable_to_seq(cutoff=timezone.now() - timedelta(seconds=grace))
    from_seq, to_seq = selectors.recheck_next_range(rows=rows, watermark=max(watermark, 2))
    return reconciliation_run(
        from_seq=from_seq, to_seq=to_seq, trigger=RunTrigger.RECHECK, full=True, progress=progress
    )


# --- repair -------------------------------------------------------------------------------


@dataclass
class RepairResult:
    upserted: int = 0
    deleted: int = 0
    repaired: int = 0  # discrepancies the re-check found fixed
    remaining: list[int] = field(default_factory=list)  # seqs still different
    not_attempted: dict[int, str] = field(default_factory=dict)  # seq -> why
    round_trips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "upserted": self.upserted,
            "deleted": self.deleted,
            "repaired": self.repaired,
            "remaining": self.remaining,
            "not_attempted": {str(k): v for k, v in self.not_attempted.items()},
            "round_trips": self.round_trips,
        }


def reconciliation_repair(
    *,
    run_id: int | None = None,
    discrepancy_ids: Sequence[int] | None = None,
    delete_extras: bool = False,
) -> RepairResult:
    """Repair the unrepaired error discrepancies of a run (or the given ones).

    Missing, mismatched and Supabase-side invalid rows are upserted from the local log;
    extras are deleted only with ``delete_extras``; a local event whose own checksum is
    invalid is not copied anywhere. Afterwards exactly those seqs are fetched again on
    both sides and judged, and each discrepancy found fixed gets ``repaired_at``.
    Raises ``ReconciliationBusy`` while a run holds the lock.
    """
    if (run_id is None) == (discrepancy_ids is None):
        raise ValueError("give exactly one of run_id and discrepancy_ids")
    queryset = Discrepancy.objects.filter(category__in=ERROR_CATEGORIES, repaired_at__isnull=True)
    queryset = (
        queryset.filter(run_id=run_id)
        if run_id is not None
        else queryset.filter(id__in=discrepancy_ids)
    )
    discrepancies = list(queryset.order_by("seq"))
    result = RepairResult()
    if not discrepancies:
        return result
    meter = Meter()
    batch_size = int(reconciliation_setting("RECONCILIATION_REPAIR_BATCH_SIZE"))
    with reconciliation_lock() as acquired:
        if not acquired:
            raise ReconciliationBusy("a reconciliation run is in progress; repair later")
        seqs = sorted({d.seq for d in discrepancies})
        local = {row.seq: row for row in local_rows_by_seq(seqs=seqs, meter=meter)}
        upserts: list[dict[str, Any]] = []
        deletes: list[int] = []
        attempted: set[int] = set()
        for d in discrepancies:
            row = local.get(d.seq)
            if row is None or d.category == Category.EXTRA_IN_SUPABASE:
                # an extra (no local event, or one routed away): only deleted on request
                if delete_extras:
                    deletes.append(d.seq)
                    attempted.add(d.seq)
                else:
                    result.not_attempted[d.seq] = "extra in Supabase: delete not requested"
                continue
            if not checksum_valid(row):
                result.not_attempted[d.seq] = "the local event's own checksum is invalid"
                continue
            upserts.append(event_to_supabase_row(row))
            attempted.add(d.seq)
        unique_upserts = list({row["seq"]: row for row in upserts}.values())
        for index in range(0, len(unique_upserts), batch_size):
            batch = unique_upserts[index : index + batch_size]
            service_client().table(MONITORING_EVENTS_TABLE).upsert(
                batch, on_conflict="seq", returning="minimal"
            ).execute()
            meter.supabase()
            result.upserted += len(batch)
        unique_deletes = sorted(set(deletes))
        for index in range(0, len(unique_deletes), batch_size):
            batch = unique_deletes[index : index + batch_size]
            service_client().table(MONITORING_EVENTS_TABLE).delete(returning="minimal").in_(
                "seq", batch
            ).execute()
            meter.supabase()
            result.deleted += len(batch)
        # Re-check exactly the seqs touched: no grace here, the rows were just written.
        after_local = local_rows_by_seq(seqs=sorted(attempted), meter=meter)
        after_remote = remote_rows_by_seq(seqs=sorted(attempted), meter=meter)
        findings, _, _ = judge_rows(
            seqs=attempted,
            local_rows=after_local,
            remote_rows=after_remote,
            cutoff=timezone.now() + timedelta(days=1),
        )
        still = {f.seq for f in findings if f.category in ERROR_CATEGORIES}
        fixed = [d.pk for d in discrepancies if d.seq in attempted and d.seq not in still]
        now = timezone.now()
        Discrepancy.objects.filter(pk__in=fixed).update(repaired_at=now)
        result.repaired = len(fixed)
        result.remaining = sorted({d.seq for d in discrepancies if d.pk not in set(fixed)})
    result.round_trips = meter.round_trips_local + meter.round_trips_supabase
    return result
