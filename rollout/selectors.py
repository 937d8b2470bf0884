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
    Thresholds,
    Transport,
    TransportChoice,
    TransportPreference,
)

# --- State --------------------------------------------------------------------------------


def rollout_state_get() -> RolloutState:
    state, _ = RolloutState.objects.get_or_create(id=1)
    return state


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

    @property
    def error_rate_percent(self) -> float | None:
        return None if self.error_rate is None else self.error_rate * 100

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FAILURE = f"""(kind = '{SampleKind.DELIVERY}' AND value = 0)
    OR kind IN ('{SampleKind.CONNECT_FAILURE}', '{SampleKind.ERROR}')"""
_OPERATION = f"""kind IN ('{SampleKind.DELIVERY}', '{SampleKind.CONNECT}',
    '{SampleKind.CONNECT_FAILURE}', '{SampleKind.ERROR}')"""


def transport_health(
    *, transport: str, window_seconds: int, now: datetime | None = None
) -> TransportHealth:
    """Health of one transport over the last ``window_seconds``, computed in PostgreSQL.

    Consecutive connection failures count the prober's failures since its last successful
    connect (within the window): the prober is one client retrying in sequence, whereas
    failures reported by many independent pages interleave and have no "in a row"; pages'
    failures count in the error rate instead.
    """
    now = now or timezone.now()
    since = now - timedelta(seconds=window_seconds)
    table = HealthSample._meta.db_table
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
            WHERE transport = %s AND at > %s AND at <= %s
            """,
            [SampleKind.LATENCY, SampleKind.LATENCY, transport, since, now],
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
    )


@dataclass(frozen=True)
class Baseline:
    p95_ms: float
    source: str  # "measured" (legacy p95 over the window) or "configured"
    legacy_samples: int


def latency_baseline(
    *, thresholds: Thresholds, legacy: TransportHealth | None = None, now: datetime | None = None
) -> Baseline:
    legacy = legacy or transport_health(
        transport=Transport.WEBSOCKET, window_seconds=thresholds.latency_window_seconds, now=now
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


@dataclass(frozen=True)
class HealthReport:
    at: datetime
    supabase_short: TransportHealth  # over the error-rate window
    supabase_long: TransportHealth  # over the latency window
    websocket_short: TransportHealth
    websocket_long: TransportHealth
    baseline: Baseline
    breaches: list[Breach]
    gates_have_data: bool  # enough samples to call the Supabase path healthy

    def figures(self) -> dict[str, Any]:
        """JSON for audit entries, alerts and the panel."""
        return {
            "at": self.at.isoformat(),
            "supabase": {
                "short": self.supabase_short.as_dict(),
                "long": self.supabase_long.as_dict(),
            },
            "websocket": {
                "short": self.websocket_short.as_dict(),
                "long": self.websocket_long.as_dict(),
            },
            "baseline": asdict(self.baseline),
            "breaches": [asdict(breach) for breach in self.breaches],
        }


def health_report(
    *, thresholds: Thresholds | None = None, now: datetime | None = None
) -> HealthReport:
    """Both transports over both windows, the baseline, and which rules the Supabase path
    breaks. Only the Supabase path can trigger a rollback: rolling back to the legacy path
    because the legacy path is unwell would help nobody."""
    thresholds = thresholds or thresholds_get()
    now = now or timezone.now()
    short, long = thresholds.error_rate_window_seconds, thresholds.latency_window_seconds
    sb_short = transport_health(transport=Transport.SUPABASE, window_seconds=short, now=now)
    sb_long = transport_health(transport=Transport.SUPABASE, window_seconds=long, now=now)
    ws_short = transport_health(transport=Transport.WEBSOCKET, window_seconds=short, now=now)
    ws_long = transport_health(transport=Transport.WEBSOCKET, window_seconds=long, now=now)
    baseline = latency_baseline(thresholds=thresholds, legacy=ws_long)

    breaches: list[Breach] = []
    if (
        sb_short.operations >= thresholds.error_rate_min_samples
        and sb_short.error_rate is not None
        and sb_short.error_rate > thresholds.error_rate_max
    ):
        breaches.append(
            Breach(
                "error_rate",
                f"Supabase error rate {sb_short.error_rate:.1%} > "
                f"{thresholds.error_rate_max:.1%} over {short} s "
                f"({sb_short.failures}/{sb_short.operations})",
            )
        )
    limit = max(thresholds.latency_ratio_max * baseline.p95_ms, thresholds.latency_floor_ms)
    if (
        sb_long.latency_samples >= thresholds.latency_min_samples
        and sb_long.p95_ms is not None
        and sb_long.p95_ms > limit
    ):
        breaches.append(
            Breach(
                "latency",
                f"Supabase p95 {sb_long.p95_ms:.1f} ms > {thresholds.latency_ratio_max:g} x "
                f"baseline {baseline.p95_ms:.1f} ms ({baseline.source}) over {long} s"
                + (
                    f" and > floor {thresholds.latency_floor_ms:g} ms"
                    if thresholds.latency_floor_ms
                    else ""
                ),
            )
        )
    if sb_short.consecutive_connect_failures >= thresholds.consecutive_connect_failures_max:
        breaches.append(
            Breach(
                "connect_failures",
                f"{sb_short.consecutive_connect_failures} consecutive Supabase connection "
                f"failures (limit {thresholds.consecutive_connect_failures_max})",
            )
        )
    gates_have_data = (
        sb_short.operations >= thresholds.error_rate_min_samples
        and sb_long.latency_samples >= thresholds.latency_min_samples
    )
    return HealthReport(
        at=now,
        supabase_short=sb_short,
        supabase_long=sb_long,
        websocket_short=ws_short,
        websocket_long=ws_long,
        baseline=baseline,
        breaches=breaches,
        gates_have_data=gates_have_data,
    )


def health_series(
    *, transport: str, window_seconds: int, buckets: int = 30, now: datetime | None = None
) -> list[dict[str, Any]]:
    """p95 latency and error rate per time bucket, for the panel's chart."""
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
            WHERE transport = %s AND at > %s AND at <= %s
            GROUP BY bucket ORDER BY bucket
            """,
            [since, width, SampleKind.LATENCY, transport, since, now],
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
