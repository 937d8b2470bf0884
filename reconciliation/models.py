"""Reconciliation runs and the discrepancies they find.

Invariants:
- A run covers the seqs ``from_seq .. to_seq`` (both inclusive; ``to_seq < from_seq`` is
  an empty range). Runs never overlap: ``reconciliation.services.reconciliation_run``
  holds a PostgreSQL advisory lock for the whole comparison, and a run started while
  another holds it is recorded as ``skipped``.
- ``counts`` holds the exact number of events per category; ``Discrepancy`` rows may be
  capped (expected-absent ones are a sample), so count rows only for display.
- ``consistency_rate`` = events that agree / events judged (both sides of the grace
  period: events younger than it are not judged).
"""

from django.db import models


class Category(models.TextChoices):
    MISSING_IN_SUPABASE = "missing_in_supabase", "Missing in Supabase"
    EXTRA_IN_SUPABASE = "extra_in_supabase", "Extra in Supabase"
    CONTENT_MISMATCH = "content_mismatch", "Content mismatch"
    CHECKSUM_INVALID = "checksum_invalid", "Checksum invalid"
    EXPECTED_ABSENT = "expected_absent", "Expected absent (not an error)"


ERROR_CATEGORIES = frozenset(
    {
        Category.MISSING_IN_SUPABASE,
        Category.EXTRA_IN_SUPABASE,
        Category.CONTENT_MISMATCH,
        Category.CHECKSUM_INVALID,
    }
)


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    CLEAN = "clean", "Clean"
    DISCREPANCIES = "discrepancies", "Discrepancies found"
    SKIPPED = "skipped", "Skipped (another run was in progress)"
    TIMED_OUT = "timed_out", "Timed out"
    FAILED = "failed", "Failed"


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Manual (command or admin)"
    HOURLY = "hourly", "Hourly (new events)"
    RECHECK = "recheck", "Rolling full pass"


class RunMode(models.TextChoices):
    INCREMENTAL = "incremental", "Incremental (stored digests; new and touched chunks re-hashed)"
    FULL = "full", "Full pass (every chunk re-hashed in Supabase)"


class ReconciliationRun(models.Model):
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    from_seq = models.BigIntegerField(null=True, blank=True)
    to_seq = models.BigIntegerField(null=True, blank=True)
    grace_seconds = models.FloatField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    mode = models.CharField(
        max_length=16,
        choices=RunMode.choices,
        default=RunMode.FULL,
        help_text="Incremental: stored chunk digests compared, only new or touched chunks "
        "re-hashed. Full: every chunk of the range re-hashed in Supabase (and locally "
        "with RECONCILIATION_FULL_PASS_REHASH_LOCAL).",
    )
    chunks_compared = models.PositiveBigIntegerField(default=0)
    chunks_rehashed = models.PositiveBigIntegerField(
        default=0,
        help_text="Chunks whose rows were hashed by this run (sealed 1,024-seq chunks and "
        "the smaller chunks of live comparison), both sides counted once.",
    )
    round_trips_supabase = models.PositiveIntegerField(default=0)
    round_trips_local = models.PositiveIntegerField(default=0)
    rows_fetched_supabase = models.PositiveBigIntegerField(default=0)
    rows_fetched_local = models.PositiveBigIntegerField(default=0)
    events_judged = models.PositiveBigIntegerField(default=0)
    events_agreeing = models.PositiveBigIntegerField(default=0)
    events_not_judged = models.PositiveBigIntegerField(
        default=0, help_text="Events in the range younger than the grace period."
    )
    stored_digests_rewritten = models.JSONField(
        default=dict,
        blank=True,
        help_text="Stored chunk digests found not to match their rows and rewritten, per "
        "side (not discrepancies: the rows agree; a store had missed a write).",
    )
    counts = models.JSONField(default=dict, blank=True, help_text="Events per category.")
    discrepancy_count = models.PositiveBigIntegerField(
        default=0, help_text="Events in an error category (expected-absent excluded)."
    )
    consistency_rate = models.FloatField(null=True, blank=True)
    phase_ms = models.JSONField(
        default=dict, blank=True, help_text="Milliseconds spent per phase of the comparison."
    )
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["trigger", "status", "-started_at"], name="recon_run_trigger_idx")
        ]
        # The admin's "Run now" button (reconciliation/admin.py); superusers hold it.
        permissions = [("run_reconciliation", "Can start a reconciliation run from the admin")]

    def __str__(self) -> str:
        return f"run #{self.pk} ({self.status})"

    @property
    def round_trips(self) -> int:
        return self.round_trips_supabase + self.round_trips_local

    @property
    def rows_fetched(self) -> int:
        return self.rows_fetched_supabase + self.rows_fetched_local


class Discrepancy(models.Model):
    run = models.ForeignKey(
        ReconciliationRun, on_delete=models.CASCADE, related_name="discrepancies"
    )
    seq = models.BigIntegerField()
    category = models.CharField(max_length=24, choices=Category.choices)
    fields = models.JSONField(default=list, blank=True, help_text="Fields that differ.")
    details = models.JSONField(default=dict, blank=True)
    criticality = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    repaired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "discrepancies"
        ordering = ["run_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="recon_discrepancy_one_per_seq"),
        ]
        indexes = [models.Index(fields=["category"], name="recon_discrepancy_category_idx")]

    def __str__(self) -> str:
        return f"#{self.seq}: {self.category}"

    @property
    def is_error(self) -> bool:
        return self.category in ERROR_CATEGORIES


class SealedChunk(models.Model):
    """The local log's digest of one sealed chunk: seqs ``[n*1024 + 1, (n+1)*1024 + 1)``.

    A chunk is sealed once all of it lies below the newest judgeable event (its events are
    final: seqs are allocated in commit order, and a delivery is skipped or not from the
    moment the event is published). ``row_count``, ``digest`` and ``skipped`` are what
    ``reconciliation.digest.LOCAL_CHUNK_DIGESTS_SQL`` computes for the chunk; the copy
    keeps the same figures in ``public.monitoring_events_digests`` (kept by triggers). The
    hourly run compares the two stores; the full pass re-hashes both and rewrites them.
    """

    chunk_no = models.BigIntegerField(primary_key=True)
    row_count = models.PositiveIntegerField(help_text="Events expected in Supabase.")
    skipped = models.PositiveIntegerField(default=0, help_text="Events routed away.")
    digest = models.DecimalField(
        max_digits=20, decimal_places=0, help_text="Sum of the row hashes modulo 2^64."
    )
    hashed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"chunk {self.chunk_no}"
