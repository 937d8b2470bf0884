"""Rollout models.

``Flag`` is the project's waffle flag model (``WAFFLE_FLAG_MODEL``). It must exist in the
first migration of this app, because a swappable model cannot be introduced once a
database has been created with waffle's own.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from waffle.models import AbstractUserFlag

from rollout.buckets import in_percentage

SUPABASE_REALTIME_FLAG = "supabase_realtime"


class Flag(AbstractUserFlag):
    """A waffle flag whose percentage decision for a signed-in user is a sticky bucket.

    Anonymous requests keep waffle's cookie-and-random behaviour.
    """

    # Waffle's own field stops at 99.9; the last rollout stage is 100 %.
    percent = models.DecimalField(
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="0.0 to 100.0: the share of signed-in users (by sticky bucket) for whom "
        "this flag is active.",
    )

    class Meta(AbstractUserFlag.Meta):
        swappable = "WAFFLE_FLAG_MODEL"
        verbose_name = "Flag"
        verbose_name_plural = "Flags"

    def is_active_for_user_id(self, user_id: int | str) -> bool:
        """The percentage decision alone, usable without a request (consumers, tasks)."""
        return in_percentage(flag_name=self.name, user_id=user_id, percent=self.percent)

    def _is_active_for_percent(self, request, read_only: bool) -> bool | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if self.percent and self.percent > 0:
                return self.is_active_for_user_id(user.pk)
            return None
        return super()._is_active_for_percent(request, read_only)


# --- Rollout state, preferences, audit -------------------------------------------------


class Stage(models.TextChoices):
    SHADOW = "shadow", "Shadow (0 %)"
    TEN = "10", "10 %"
    FIFTY = "50", "50 %"
    HUNDRED = "100", "100 %"


# The flag percent each stage stands for; the order of this dict is the promotion order.
STAGE_PERCENT: dict[str, int] = {
    Stage.SHADOW: 0,
    Stage.TEN: 10,
    Stage.FIFTY: 50,
    Stage.HUNDRED: 100,
}


class Transport(models.TextChoices):
    WEBSOCKET = "websocket", "WebSocket (legacy)"
    SUPABASE = "supabase", "Supabase Realtime"


class TransportChoice(models.TextChoices):
    AUTO = "auto", "Automatic (follow the rollout)"
    SUPABASE = "supabase", "Supabase Realtime"
    WEBSOCKET = "websocket", "WebSocket (legacy)"


class RolloutState(models.Model):
    """The one row (id 1) saying where the migration stands.

    ``stage`` and the ``supabase_realtime`` flag's percent are changed together, in one
    transaction, by ``rollout.services.rollout_stage_set``; the kill switch overrides both
    without touching them, so resuming returns to the stage that was in force.
    """

    stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.SHADOW)
    killed = models.BooleanField(default=False, help_text="Kill switch: everyone on websocket.")
    killed_at = models.DateTimeField(null=True, blank=True)
    kill_reason = models.TextField(blank=True)
    auto_promotion_enabled = models.BooleanField(default=False)
    promotion_dwell_seconds = models.PositiveIntegerField(
        default=3600, help_text="How long the health gates must hold before the next stage."
    )
    # Start of the current healthy dwell; a breach or any stage change resets it.
    dwell_started_at = models.DateTimeField(null=True, blank=True)
    # When the kill switch was last released. The rules judge only samples taken after
    # it, so a resume is never undone by the window of samples that caused the rollback.
    resumed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last release of the kill switch; the rollback rules and promotion gates "
        "judge only samples taken after it.",
    )
    # When the stage in force began: the start of its analyses' window (rollout/analysis.py).
    stage_started_at = models.DateTimeField(
        default=timezone.now, help_text="When the stage in force began."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="rolloutstate_single_row")
        ]
        # What the panel checks (rollout/permissions.py); editing the thresholds is the
        # Thresholds model's own ``rollout.change_thresholds``. Superusers hold them all.
        permissions = [
            ("set_stage", "Can change the rollout stage and automatic promotion"),
            ("operate_kill_switch", "Can throw and release the kill switch"),
        ]

    def __str__(self) -> str:
        return f"stage {self.stage}{' (killed)' if self.killed else ''}"


class TransportPreference(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="transport_preference"
    )
    choice = models.CharField(
        max_length=12, choices=TransportChoice.choices, default=TransportChoice.AUTO
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.choice}"


class AuditAction(models.TextChoices):
    STAGE = "stage", "Stage change"
    KILL = "kill", "Kill switch thrown"
    RESUME = "resume", "Kill switch released"
    PREFERENCE = "preference", "User transport preference"
    PROMOTION = "promotion", "Automatic promotion settings"
    THRESHOLDS = "thresholds", "Thresholds changed"
    ALERT_ACK = "alert_ack", "Alert acknowledged"
    FORCE_REQUEST = "force_request", "Forced promotion requested"
    FORCE_DECISION = "force_decision", "Forced promotion request decided"
    FORCED = "forced", "Stage raised without a passing analysis"


class AuditEntry(models.Model):
    """Who changed what, when, why, and how healthy both paths were at that moment."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when the system acted.",
    )
    # Kept as text too, so the record survives the user's deletion; "system" for automation.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    from_value = models.CharField(max_length=64, blank=True)
    to_value = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True)
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whose preference changed (preference entries only).",
    )

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.to_value}"


# --- Health -----------------------------------------------------------------------------


class SampleKind(models.TextChoices):
    DELIVERY = "delivery", "Delivery (value 1 delivered, 0 lost)"
    LATENCY = "latency", "End-to-end latency (ms)"
    CONNECT = "connect", "Connection established"
    CONNECT_FAILURE = "connect_failure", "Connection attempt failed"
    ERROR = "error", "Error"


class SampleOrigin(models.TextChoices):
    PROBER = "prober", "Prober"
    BROWSER = "browser", "Browser"


class HealthSample(models.Model):
    """One measurement. Counters may carry a ``weight`` > 1 (a page reporting 3 connects
    in one request is one row), so volume grows with requests, not with counts."""

    transport = models.CharField(max_length=12, choices=Transport.choices)
    kind = models.CharField(max_length=16, choices=SampleKind.choices)
    value = models.FloatField(default=1.0)
    weight = models.PositiveIntegerField(default=1)
    at = models.DateTimeField(default=timezone.now)
    origin = models.CharField(max_length=8, choices=SampleOrigin.choices)
    # The signed-in user who sent a browser sample (empty for the prober): the weighting
    # (rollout/weighting.py) bounds each reporter's share. A plain id, not a foreign key:
    # deleting a user must not scan or rewrite this high-volume table (pruned after 48 h).
    reporter_id = models.BigIntegerField(
        null=True, blank=True, help_text="The user who reported a browser sample."
    )

    class Meta:
        indexes = [
            # Every health query is "this transport, since T"; pruning is "before T".
            models.Index(fields=["transport", "at"], name="rollout_sample_transport_at"),
            models.Index(fields=["at"], name="rollout_sample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.transport} {self.kind} {self.value} @ {self.at:%H:%M:%S}"


class Thresholds(models.Model):
    """The one row (id 1) of rollback thresholds, edited in the admin."""

    error_rate_max = models.FloatField(
        default=0.05, help_text="Roll back when the Supabase error rate exceeds this (0.05 = 5 %)."
    )
    error_rate_window_seconds = models.PositiveIntegerField(default=300)
    error_rate_min_samples = models.PositiveIntegerField(
        default=20, help_text="Below this many samples in the window the error rate is not judged."
    )
    latency_ratio_max = models.FloatField(
        default=2.0, help_text="Roll back when Supabase p95 exceeds this multiple of the baseline."
    )
    latency_window_seconds = models.PositiveIntegerField(default=600)
    latency_floor_ms = models.FloatField(
        default=0.0,
        help_text="The latency rule also needs Supabase p95 above this many ms (0: the ratio "
        "alone decides). Keeps a fast-but-relatively-slower path from rolling back.",
    )
    latency_min_samples = models.PositiveIntegerField(
        default=20, help_text="Minimum Supabase latency samples before p95 is judged."
    )
    baseline_min_samples = models.PositiveIntegerField(
        default=20,
        help_text="Minimum legacy latency samples for the measured baseline; below it the "
        "configured baseline (ROLLOUT_BASELINE_P95_MS) is used.",
    )
    consecutive_connect_failures_max = models.PositiveIntegerField(
        default=3, help_text="Roll back at this many connection failures in a row."
    )
    # The stage analysis (rollout/analysis.py): what a passing stage must show.
    analysis_significance_level = models.FloatField(
        default=0.01,
        validators=[MinValueValidator(1e-6), MaxValueValidator(0.5)],
        help_text="Stage analysis: a one-sided test (Mann-Whitney U on latency, Fisher's "
        "exact on errors) must reach this p-value before Supabase is called worse.",
    )
    analysis_min_samples = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(2)],
        help_text="Stage analysis: latencies and operations needed on EACH transport; with "
        "fewer from every source the verdict is inconclusive.",
    )
    analysis_max_effect_size = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="Stage analysis: the largest allowed probability that a Supabase latency "
        "exceeds a legacy one (0.5: no difference; 0.6: a random Supabase delivery is slower "
        "than a random legacy one 60 % of the time). A significant excess above it fails.",
    )
    analysis_latency_tolerance_ms = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0)],
        help_text="Stage analysis: Supabase latencies are compared after taking this many ms "
        "off each (0: strict). Says 'slower by up to this much is fine', like the rollback "
        "rule's latency floor.",
    )
    analysis_error_rate_max_increase = models.FloatField(
        default=0.01,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Stage analysis: the largest allowed excess of the Supabase error rate over "
        "the legacy one (0.01 = 1 point). A significant excess above it fails.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "thresholds"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="thresholds_single_row")
        ]

    def __str__(self) -> str:
        return "Rollback thresholds"


# --- Alerts -----------------------------------------------------------------------------


class AlertSeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Alert(models.Model):
    """A condition someone should look at. At most one open (unacknowledged) alert per
    kind: a repeat while one is open bumps its ``count`` and ``last_seen`` instead."""

    kind = models.CharField(max_length=64)
    severity = models.CharField(max_length=8, choices=AlertSeverity.choices)
    message = models.TextField()
    figures = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    count = models.PositiveIntegerField(default=1)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(acknowledged_at__isnull=True),
                name="rollout_alert_one_open_per_kind",
            )
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind} x{self.count}"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None


# --- Stage analyses and forced promotions ---------------------------------------------------


class Verdict(models.TextChoices):
    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    INCONCLUSIVE = "inconclusive", "Inconclusive (too few samples)"


class AnalysisTrigger(models.TextChoices):
    PERIODIC = "periodic", "Periodic (Celery beat)"
    STAGE_END = "stage_end", "Stage ended"
    MANUAL = "manual", "Manual (command or panel)"


class StageAnalysis(models.Model):
    """The evidence for one stage over one window (``rollout/analysis.py`` computes it).

    Recorded while a stage runs (Celery beat) and when it ends (``final``, after the
    stage change commits). ``stage_started_at`` names the stage's run: raising the stage
    needs the latest analysis of the run in force to pass. Rows are never edited.
    """

    stage = models.CharField(max_length=8, choices=Stage.choices)
    stage_started_at = models.DateTimeField(help_text="Start of the stage's run.")
    window_start = models.DateTimeField(help_text="The later of the stage start and a resume.")
    window_end = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)
    trigger = models.CharField(max_length=12, choices=AnalysisTrigger.choices)
    final = models.BooleanField(default=False, help_text="Recorded when the stage ended.")
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    reasons = models.JSONField(default=list, blank=True, help_text="Why, one sentence each.")
    # Per transport: users (cohort, page reporters), p50/p95/p99, error rate, connection
    # failures, from the prober (full weight) and from pages (rollout/weighting.py).
    transports = models.JSONField(default=dict, blank=True)
    # The tests behind the verdict: per source, Mann-Whitney U and Fisher's exact.
    comparison = models.JSONField(default=dict, blank=True)
    # Events delivered per sink, validated by reconciliation, sampled share per route.
    events = models.JSONField(default=dict, blank=True)
    # Reconciliation runs started in the window and their discrepancies.
    reconciliation = models.JSONField(default=dict, blank=True)
    thresholds = models.JSONField(default=dict, blank=True, help_text="As they were applied.")
    # The Supabase plan against this stage's and the next stage's projected load, measured
    # when recorded (rollout/quotas.py); empty on analyses recorded before issue 13.
    quota_headroom = models.JSONField(
        null=True, blank=True,
        help_text="Plan quotas against the projected connections and messages/s, with the "
        "headroom left (empty on analyses recorded before the quota work).",
    )  # fmt: skip

    class Meta:
        ordering = ["-recorded_at", "-id"]
        verbose_name_plural = "stage analyses"
        indexes = [
            models.Index(
                fields=["stage", "stage_started_at", "-recorded_at"], name="rollout_analysis_run"
            )
        ]

    def __str__(self) -> str:
        return f"stage {self.stage} @ {self.window_end:%Y-%m-%d %H:%M}: {self.verdict}"


class ForceRequestStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a second staff account"
    APPROVED = "approved", "Approved (stage raised)"
    REJECTED = "rejected", "Rejected"
    STALE = "stale", "Stale (the stage changed meanwhile)"


class ForcedPromotionRequest(models.Model):
    """ "Promote anyway": one staff account asks, another with ``rollout.set_stage``
    approves (four eyes). Both steps are audited; nobody approves their own request."""

    from_stage = models.CharField(max_length=8, choices=Stage.choices)
    to_stage = models.CharField(max_length=8, choices=Stage.choices)
    stage_started_at = models.DateTimeField(help_text="The run of from_stage it was asked in.")
    reason = models.TextField()
    analysis = models.ForeignKey(
        StageAnalysis, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(
        max_length=12, choices=ForceRequestStatus.choices, default=ForceRequestStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(decided_by=models.F("requested_by")),
                name="rollout_force_request_four_eyes",
            )
        ]

    def __str__(self) -> str:
        return f"{self.from_stage} → {self.to_stage} ({self.status})"
