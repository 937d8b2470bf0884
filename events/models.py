"""The local event log and its bookkeeping.

Invariants:
- ``Event.seq`` is global, gapless and increasing in commit order: it is allocated from the
  single ``SeqCounter`` row while that row is locked, and the lock is held until commit.
  A rolled-back publish gives its numbers back.
- ``Event.checksum`` is SHA-256 over the canonical form in ``events.checksums``.
- Every event has exactly one ``Delivery`` per sink; a sink the route does not send to is
  recorded as ``skipped`` so that reconciliation knows the absence is expected.
"""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Criticality(models.TextChoices):
    CRITICAL = "critical", "Critical"
    PERFORMANCE = "performance", "Performance"
    USER_ACTIVITY = "user_activity", "User activity"
    SYSTEM = "system", "System"
    DEBUG = "debug", "Debug"


class Sink(models.TextChoices):
    WEBSOCKET = "websocket", "WebSocket (legacy)"
    SUPABASE = "supabase", "Supabase"


class Producer(models.Model):
    """A system allowed to send events. Only a hash of its token is stored."""

    name = models.CharField(max_length=100, unique=True)
    token_prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return self.name


class SeqCounter(models.Model):
    """One row: the last ``seq`` handed out. Its row lock serialises allocation."""

    last_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="seqcounter_single_row")]

    def __str__(self) -> str:
        return f"last seq {self.last_seq}"


class Event(models.Model):
    seq = models.BigIntegerField(primary_key=True)
    event_type = models.CharField(max_length=64)
    source = models.CharField(max_length=100)
    criticality = models.CharField(max_length=16, choices=Criticality.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    payload = models.JSONField(default=dict)
    checksum = models.CharField(max_length=64)
    producer = models.ForeignKey(
        Producer, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    # NULL, not "", means "no key", so that the unique constraint ignores keyless events.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["producer", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                nulls_distinct=False,
                name="event_idempotency_key_unique_per_producer",
            ),
        ]
        indexes = [models.Index(fields=["received_at"], name="event_received_at_idx")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Delivery(models.Model):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    sink = models.CharField(max_length=16, choices=Sink.choices)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # A failed delivery is retried by the drain no earlier than this (exponential backoff).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    write_latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "sink"], name="delivery_one_per_sink"),
        ]
        indexes = [
            models.Index(
                fields=["sink", "event"],
                condition=Q(status__in=["pending", "failed"]),
                name="delivery_outstanding_idx",
            ),
            # "Which events does this sink not get?" (feeds, backfill, reconciliation).
            models.Index(
                fields=["sink", "event"],
                condition=Q(status="skipped"),
                name="delivery_skipped_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.event_id} → {self.sink}: {self.status}"


class ClassificationRule(models.Model):
    """Decides an event's criticality from its type or payload.

    Exact matches are tried first, then keywords and globs (by priority), then payload
    keys; an event that matches nothing is ``system``.
    """

    class MatchKind(models.TextChoices):
        EXACT = "exact", "Exact event type"
        KEYWORD = "keyword", "Keyword (a word of the event type starts with it)"
        GLOB = "glob", "Glob pattern on the event type (*, ?)"
        PAYLOAD_KEY = "payload_key", "Top-level payload key present"

    match_kind = models.CharField(max_length=16, choices=MatchKind.choices)
    value = models.CharField(max_length=100)
    criticality = models.CharField(max_length=16, choices=Criticality.choices)
    priority = models.IntegerField(default=100, help_text="Lower is tried first.")
    is_enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["match_kind", "value"], name="rule_unique_match"),
        ]

    def __str__(self) -> str:
        return f"{self.get_match_kind_display()} {self.value!r} → {self.criticality}"


class Route(models.Model):
    """Which sinks receive the events of one criticality."""

    criticality = models.CharField(max_length=16, choices=Criticality.choices, unique=True)
    to_websocket = models.BooleanField(default=True)
    to_supabase = models.BooleanField(default=True)
    supabase_sample_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=100,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Share of this criticality's events mirrored to Supabase (by seq); the "
        "rest are recorded as skipped.",
    )

    def __str__(self) -> str:
        return f"route {self.criticality}"


class BreakerStateChange(models.Model):
    """A change of the Supabase circuit breaker's state, as seen by the process that made it."""

    breaker = models.CharField(max_length=50)
    old_state = models.CharField(max_length=16)
    new_state = models.CharField(max_length=16)
    at = models.DateTimeField(auto_now_add=True)
    last_error = models.TextField(blank=True, default="")
    process = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.breaker}: {self.old_state} → {self.new_state}"
