"""Reads of the rollout app: a user's transport, cohort sizes, health figures.

A user's transport is decided in this order (docs/rollout.md):
1. the kill switch: everyone on ``websocket``;
2. the user's own choice (``supabase`` or ``websocket``; ``auto`` falls through);
3. the sticky bucket of the ``supabase_realtime`` flag at the stage's percent.
Anonymous users are always on ``websocket`` (the feed needs a signed-in user anyway).
"""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from rollout.buckets import in_percentage
from rollout.conf import rollout_setting
from rollout.models import (
    SUPABASE_REALTIME_FLAG,
    AuditEntry,
    Flag,
    HealthSample,
    RolloutState,
    SampleKind,
    SampleOrigin,
    StageAnalysis,
    Thresholds,
    Transport,
    TransportChoice,
    TransportPreference,
)
from rollout.weighting import FAILURE_SQL as _FAILURE
from rollout.weighting import OPERATION_SQL as _OPERATION
from rollout.weighting import WeightedTelemetry, telemetry_weighted

# --- State --------------------------------------------------------------------------------


def rollout_state_get() -> RolloutState:
    state, _ = RolloutState.objects.get_or_create(id=1)
    return state


def rollout_reason_latest() -> str:
    """Why the rollout is where it is, for staff: the kill switch's reason while it is on,
    else the reason of the latest stage change or resume."""
    state = rollout_state_get()
    if state.killed:
        return state.kill_reason
    entry = (
        AuditEntry.objects.filter(action__in=["stage", "kill", "resume"])
        .order_by("-at", "-id")
        .values_list("reason", flat=True)
        .first()
    )
    return entry or ""


def thresholds_get() -> Thresholds:
    thresholds, _ = Thresholds.objects.get_or_create(id=1)
    return thresholds


def supabase_flag_percent() -> float:
    percent = (
        Flag.objects.filter(name=SUPABASE_REALTIME_FLAG).values_list("percent", flat=True).first()
    )
    return float(percent or 0)


# --- Transport ----------------------------------------------------------------------------


def transport_for_user_id(user_id: int | str) -> str:
    """``"websocket"`` or ``"supabase"`` for a user id, without a request or user object."""
    if rollout_state_get().killed:
        return Transport.WEBSOCKET
    choice = (
        TransportPreference.objects.filter(user_id=user_id).values_list("choice", flat=True).first()
    )
    if choice in (TransportChoice.SUPABASE, TransportChoice.WEBSOCKET):
        return str(choice)
    in_cohort = in_percentage(
        flag_name=SUPABASE_REALTIME_FLAG, user_id=user_id, percent=supabase_flag_percent()
    )
    return Transport.SUPABASE if in_cohort else Transport.WEBSOCKET


def user_transport(user) -> str:
    """The transport a signed-in user's dashboard must use: ``"websocket"`` | ``"supabase"``."""
    if user is None or not user.is_authenticated:
        return Transport.WEBSOCKET
    return transport_for_user_id(user.pk)


def user_transport_choice(user) -> str:
    choice = TransportPreference.objects.filter(user=user).values_list("choice", flat=True).first()
    return str(choice or TransportChoice.AUTO)


def cohort_sizes() -> dict[str, int]:
    """How many active users are on each transport right now.

    Users on ``auto`` are bucketed here in Python: the bucket is a SHA-256 the database
    does not compute the same way, and the count is read by staff, not on a hot path.
    """
    users = get_user_model().objects.filter(is_active=True)
    if rollout_state_get().killed:
        return {Transport.WEBSOCKET: users.count(), Transport.SUPABASE: 0}
    choices = dict(
        TransportPreference.objects.filter(user__is_active=True).values_list("user_id", "choice")
    )
    percent = supabase_flag_percent()
    sizes = {Transport.WEBSOCKET.value: 0, Transport.SUPABASE.value: 0}
    for user_id in users.values_list("pk", flat=True).iterator(chunk_size=5000):
        choice = choices.get(user_id, TransportChoice.AUTO)
        if choice == TransportChoice.AUTO:
            in_cohort = in_percentage(
                flag_name=SUPABASE_REALTIME_FLAG, user_id=user_id, percent=percent
            )
            choice = Transport.SUPABASE if in_cohort else Transport.WEBSOCKET
        sizes[str(choice)] += 1
    return sizes


def stage_analysis_latest(*, state: RolloutState | None = None) -> StageAnalysis | None:
    """The latest analysis of the stage in force (of its current run: a stage left and
    entered again starts a new run, with no analysis yet)."""
    state = state or rollout_state_get()
    return (
        StageAnalysis.objects.filter(stage=state.stage, stage_started_at=state.stage_started_at)
        .order_by("-recorded_at", "-id")
        .first()
    )


def forced_promotion_requests_pending() -> list:
    from rollout.models import ForcedPromotionRequest, ForceRequestStatus

    return list(
        ForcedPromotionRequest.objects.filter(status=ForceRequestStatus.PENDING).select_related(
            "requested_by", "analysis"
        )
    )


def audit_entries(*, limit: int = 50) -> list[AuditEntry]:
    return list(AuditEntry.objects.select_related("actor", "subject_user")[:limit])


# --- Health -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransportHealth:
    transport: str
    window_seconds: int
    operations: int  # deliveries + connects + connect failures + errors (weighted)
    failures: int  # lost deliveries + connect failures + errors (weighted)
    error_rate: float | None  # failures / operations; None without operations
    latency_samples: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    consecutive_connect_failures: int
    source: str = "all"  # "prober" when only the prober's samples were read

    @property
    def error_rate_percent(self) -> float | None:
        return None if self.error_rate is None else self.error_rate * 100

    @property
    def source_label(self) -> str:
        return self.source

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window_start(*, now: datetime, window_seconds: int, not_before: datetime | None) -> datetime:
    since = now - timedelta(seconds=window_seconds)
    return not_before if not_before is not None and not_before > since else since


def transport_health(
    *,
    transport: str,
    window_seconds: int,
    now: datetime | None = None,
    origin: str | None = None,
    not_before: datetime | None = None,
) -> TransportHealth:
    """Health of one transport over the last ``window_seconds`` (and not before
    ``not_before``), computed in PostgreSQL; ``origin`` reads one origin's samples only.

    Unweighted: with ``origin=None`` pages' samples count as they were sent. The rules
    read the prober's samples here and pages' through ``rollout.weighting``.

    Consecutive connection failures count the prober's failures since its last successful
    connect (within the window): the prober is one client retrying in sequence, whereas
    failures reported by many independent pages interleave and have no "in a row"; pages'
    failures count in the error rate instead.
    """
    if origin is not None and origin not in SampleOrigin.values:
        raise ValueError(f"unknown origin {origin!r}")
    now = now or timezone.now()
    since = _window_start(now=now, window_seconds=window_seconds, not_before=not_before)
    table = HealthSample._meta.db_table
    origin_filter = "AND origin = %s" if origin else ""
    origin_params = [origin] if origin else []
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT
              coalesce(sum(weight) FILTER (WHERE {_OPERATION}), 0),
              coalesce(sum(weight) FILTER (WHERE {_FAILURE}), 0),
              count(*) FILTER (WHERE kind = %s),
              percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY value)
                FILTER (WHERE kind = %s)
            FROM {table}
            WHERE transport = %s AND at > %s AND at <= %s {origin_filter}
            """,
            [SampleKind.LATENCY, SampleKind.LATENCY, transport, since, now, *origin_params],
        )
        operations, failures, latency_samples, percentiles = cursor.fetchone()
        cursor.execute(
            f"""
            SELECT coalesce(sum(weight), 0) FROM {table}
            WHERE transport = %s AND origin = %s AND kind = %s AND at > %s AND at <= %s
              AND at > coalesce(
                (SELECT max(at) FROM {table}
                 WHERE transport = %s AND origin = %s AND kind = %s AND at <= %s),
                '-infinity')
            """,
            [
                transport, SampleOrigin.PROBER, SampleKind.CONNECT_FAILURE, since, now,
                transport, SampleOrigin.PROBER, SampleKind.CONNECT, now,
            ],
        )  # fmt: skip
        (consecutive,) = cursor.fetchone()
    p50, p95, p99 = percentiles if percentiles else (None, None, None)
    return TransportHealth(
        transport=transport,
        window_seconds=window_seconds,
        operations=int(operations),
        failures=int(failures),
        error_rate=(failures / operations) if operations else None,
        latency_samples=int(latency_samples),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        consecutive_connect_failures=int(consecutive),
        source=origin or "all",
    )


@dataclass(frozen=True)
class Baseline:
    p95_ms: float
    source: str  # "measured" (the prober's legacy p95 over the window) or "configured"
    legacy_samples: int


def latency_baseline(
    *, thresholds: Thresholds, legacy: TransportHealth | None = None, now: datetime | None = None
) -> Baseline:
    """The prober's legacy p95, or ``ROLLOUT_BASELINE_P95_MS`` while it has too few
    samples. Pages never set the baseline: one account reporting zero (or huge) legacy
    latencies would otherwise move every Supabase limit."""
    legacy = legacy or transport_health(
        transport=Transport.WEBSOCKET,
        window_seconds=thresholds.latency_window_seconds,
        now=now,
        origin=SampleOrigin.PROBER,
    )
    if legacy.latency_samples >= thresholds.baseline_min_samples and legacy.p95_ms is not None:
        return Baseline(legacy.p95_ms, "measured", legacy.latency_samples)
    return Baseline(
        float(rollout_setting("ROLLOUT_BASELINE_P95_MS")), "configured", legacy.latency_samples
    )


@dataclass(frozen=True)
class Breach:
    rule: str  # error_rate | latency | connect_failures
    message: str
    source: str = "prober"  # prober | pages


@dataclass(frozen=True)
class HealthReport:
    """The Supabase path judged twice: on the prober's samples (full weight) and on pages'
    weighted telemetry (``rollout.weighting``). A breach from either source counts; pages
    can add a breach only with a quorum of users and can never hide the prober's."""

    at: datetime
    supabase_short: TransportHealth  # prober, over the error-rate window
    supabase_long: TransportHealth  # prober, over the latency window
    websocket_short: TransportHealth  # prober
    websocket_long: TransportHealth  # prober
    pages_supabase_short: WeightedTelemetry
    pages_supabase_long: WeightedTelemetry
    pages_websocket_short: WeightedTelemetry
    pages_websocket_long: WeightedTelemetry
    baseline: Baseline
    latency_limit_ms: float
    breaches: list[Breach]
    gates_have_data: bool  # enough samples to call the Supabase path healthy
    judged_since: datetime | None  # the last resume: nothing before it is judged

    @property
    def rows(self) -> list[TransportHealth | WeightedTelemetry]:
        """What the panel and ``rollout status`` tabulate."""
        return [
            self.supabase_short, self.pages_supabase_short,
            self.supabase_long, self.pages_supabase_long,
            self.websocket_short, self.pages_websocket_short,
            self.websocket_long, self.pages_websocket_long,
        ]  # fmt: skip

    def figures(self) -> dict[str, Any]:
        """JSON for audit entries, alerts and the panel."""
        return {
            "at": self.at.isoformat(),
            "judged_since": self.judged_since.isoformat() if self.judged_since else None,
            "supabase": {
                "short": self.supabase_short.as_dict(),
                "long": self.supabase_long.as_dict(),
            },
            "websocket": {
                "short": self.websocket_short.as_dict(),
                "long": self.websocket_long.as_dict(),
            },
            "pages": {
                "supabase": {
                    "short": self.pages_supabase_short.as_dict(),
                    "long": self.pages_supabase_long.as_dict(),
                },
                "websocket": {
                    "short": self.pages_websocket_short.as_dict(),
                    "long": self.pages_websocket_long.as_dict(),
                },
            },
            "baseline": asdict(self.baseline),
            "latency_limit_ms": self.latency_limit_ms,
            "breaches": [asdict(breach) for breach in self.breaches],
        }


def _prober_breaches(
    *, short: TransportHealth, long: TransportHealth, thresholds: Thresholds, limit: float,
    baseline: Baseline,
) -> list[Breach]:  # fmt: skip
    breaches = []
    if (
        short.operations >= thresholds.error_rate_min_samples
        and short.error_rate is not None
        and short.error_rate > thresholds.error_rate_max
    ):
        breaches.append(
            Breach(
                "error_rate",
                f"Supabase error rate {short.error_rate:.1%} > "
                f"{thresholds.error_rate_max:.1%} over {short.window_seconds} s "
                f"({short.failures}/{short.operations}, prober)",
            )
        )
    if (
        long.latency_samples >= thresholds.latency_min_samples
        and long.p95_ms is not None
        and long.p95_ms > limit
    ):
        breaches.append(
            Breach(
                "latency",
                f"Supabase p95 {long.p95_ms:.1f} ms > {thresholds.latency_ratio_max:g} x "
                f"baseline {baseline.p95_ms:.1f} ms ({baseline.source}) over "
                f"{long.window_seconds} s"
                + (
                    f" and > floor {thresholds.latency_floor_ms:g} ms"
                    if thresholds.latency_floor_ms
                    else ""
                )
                + " (prober)",
            )
        )
    if short.consecutive_connect_failures >= thresholds.consecutive_connect_failures_max:
        breaches.append(
            Breach(
                "connect_failures",
                f"{short.consecutive_connect_failures} consecutive Supabase connection "
                f"failures (limit {thresholds.consecutive_connect_failures_max}, prober)",
            )
        )
    return breaches


def _pages_breaches(
    *, short: WeightedTelemetry, long: WeightedTelemetry, thresholds: Thresholds, limit: float
) -> list[Breach]:
    """Pages breach a rule only with a quorum: the weighted figure breaks it AND at least
    ``min_users`` reporters each break it on their own figures."""
    breaches = []
    failing = short.users_over_error_rate(thresholds.error_rate_max)
    if (
        short.counts
        and short.operations >= thresholds.error_rate_min_samples
        and short.error_rate is not None
        and short.error_rate > thresholds.error_rate_max
        and failing >= short.min_users
    ):
        breaches.append(
            Breach(
                "error_rate",
                f"Supabase error rate {short.error_rate:.1%} > "
                f"{thresholds.error_rate_max:.1%} over {short.window_seconds} s "
                f"(pages: {failing} of {short.users} users above it, weighted "
                f"{short.failures:g}/{short.operations:g})",
                source="pages",
            )
        )
    slow = long.users_over_latency(limit)
    if (
        long.counts
        and long.latency_samples >= thresholds.latency_min_samples
        and long.p95_ms is not None
        and long.p95_ms > limit
        and slow >= long.min_users
    ):
        breaches.append(
            Breach(
                "latency",
                f"Supabase p95 {long.p95_ms:.1f} ms > limit {limit:.1f} ms over "
                f"{long.window_seconds} s (pages: {slow} of {long.users} users above it)",
                source="pages",
            )
        )
    return breaches


def health_report(
    *,
    thresholds: Thresholds | None = None,
    now: datetime | None = None,
    not_before: datetime | None = None,
) -> HealthReport:
    """Both transports over both windows, the baseline, and which rules the Supabase path
    breaks. Only the Supabase path can trigger a rollback: rolling back to the legacy path
    because the legacy path is unwell would help nobody.

    ``not_before`` (the last resume, ``RolloutState.resumed_at``) starts every window no
    earlier than it, so each rule waits for its minimum sample count again after a resume.
    """
    thresholds = thresholds or thresholds_get()
    now = now or timezone.now()
    short, long = thresholds.error_rate_window_seconds, thresholds.latency_window_seconds

    def prober(transport: str, window: int) -> TransportHealth:
        return transport_health(
            transport=transport, window_seconds=window, now=now, origin=SampleOrigin.PROBER,
            not_before=not_before,
        )  # fmt: skip

    def pages(transport: str, window: int) -> WeightedTelemetry:
        return telemetry_weighted(
            transport=transport, window_seconds=window, now=now, not_before=not_before
        )

    sb_short, sb_long = prober(Transport.SUPABASE, short), prober(Transport.SUPABASE, long)
    ws_short, ws_long = prober(Transport.WEBSOCKET, short), prober(Transport.WEBSOCKET, long)
    pages_sb_short, pages_sb_long = (
        pages(Transport.SUPABASE, short),
        pages(Transport.SUPABASE, long),
    )
    pages_ws_short, pages_ws_long = (
        pages(Transport.WEBSOCKET, short),
        pages(Transport.WEBSOCKET, long),
    )
    baseline = latency_baseline(thresholds=thresholds, legacy=ws_long)
    limit = max(thresholds.latency_ratio_max * baseline.p95_ms, thresholds.latency_floor_ms)

    breaches = _prober_breaches(
        short=sb_short, long=sb_long, thresholds=thresholds, limit=limit, baseline=baseline
    ) + _pages_breaches(short=pages_sb_short, long=pages_sb_long, thresholds=thresholds,
                        limit=limit)  # fmt: skip
    prober_has_data = (
        sb_short.operations >= thresholds.error_rate_min_samples
        and sb_long.latency_samples >= thresholds.latency_min_samples
    )
    pages_have_data = (
        pages_sb_short.counts
        and pages_sb_long.counts
        and pages_sb_short.operations >= thresholds.error_rate_min_samples
        and pages_sb_long.latency_samples >= thresholds.latency_min_samples
    )
    return HealthReport(
        at=now,
        supabase_short=sb_short,
        supabase_long=sb_long,
        websocket_short=ws_short,
        websocket_long=ws_long,
        pages_supabase_short=pages_sb_short,
        pages_supabase_long=pages_sb_long,
        pages_websocket_short=pages_ws_short,
        pages_websocket_long=pages_ws_long,
        baseline=baseline,
        latency_limit_ms=limit,
        breaches=breaches,
        gates_have_data=prober_has_data or pages_have_data,
        judged_since=not_before,
    )


def health_series(
    *,
    transport: str,
    window_seconds: int,
    buckets: int = 30,
    now: datetime | None = None,
    origin: str = SampleOrigin.PROBER,
) -> list[dict[str, Any]]:
    """p95 latency and error rate per time bucket of one origin's samples (the prober's
    by default: unweighted page reports would let one account draw the chart)."""
    now = now or timezone.now()
    since = now - timedelta(seconds=window_seconds)
    width = window_seconds / buckets
    table = HealthSample._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT
              floor(extract(epoch FROM (at - %s)) / %s)::int AS bucket,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FILTER (WHERE kind = %s),
              coalesce(sum(weight) FILTER (WHERE {_OPERATION}), 0),
              coalesce(sum(weight) FILTER (WHERE {_FAILURE}), 0)
            FROM {table}
            WHERE transport = %s AND origin = %s AND at > %s AND at <= %s
            GROUP BY bucket ORDER BY bucket
            """,
            [since, width, SampleKind.LATENCY, transport, origin, since, now],
        )
        rows = cursor.fetchall()
    return [
        {
            "bucket": int(bucket),
            "start": (since + timedelta(seconds=bucket * width)).isoformat(),
            "p95_ms": p95,
            "error_rate": (failures / operations) if operations else None,
            "operations": int(operations),
        }
        for bucket, p95, operations, failures in rows
        if 0 <= bucket < buckets
    ]


def open_alerts(*, limit: int = 50) -> list:
    from rollout.models import Alert

    return list(Alert.objects.filter(acknowledged_at__isnull=True)[:limit])
