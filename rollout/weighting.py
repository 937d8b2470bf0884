"""Weighting of browser telemetry: what pages' reports are worth, per transport and window.

Pages report through ``POST /api/telemetry``, and anything a browser sends is in an
attacker's hands. These reads turn the stored browser samples into figures that no single
signed-in account can steer. The invariants, relied on by the rollback rules and the
promotion gates (``rollout.selectors.health_report``) and meant for any later analysis:

- **Bounded weight per user.** Within one window, a reporter's operations count up to
  ``ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS``; above it, its failures are scaled by the same
  factor (its own error rate is kept, its volume is not). At most
  ``ROLLOUT_TELEMETRY_USER_MAX_LATENCIES`` of its latencies enter the percentiles, taken
  evenly across its own sorted values (its own distribution is kept, its volume is not).
- **A quorum of distinct users.** ``counts`` is true only with at least
  ``ROLLOUT_TELEMETRY_MIN_USERS`` distinct reporters in the window; below it page
  telemetry neither breaches a rule nor satisfies a gate. A breach from page telemetry
  also needs that many reporters who each see it themselves (``users_over_*``).
- **Only browser samples.** The prober's samples are not read here: they keep their full
  weight and are judged on their own (``rollout.selectors.transport_health``), so pages
  can neither outvote nor mask what the prober measures.

Samples stored before reporters were recorded (``reporter_id`` empty) count as one
reporter together.
"""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from rollout.conf import rollout_setting
from rollout.models import HealthSample, SampleKind, SampleOrigin

# What a failure and an operation are, for every health query (selectors use them too).
FAILURE_SQL = f"""((kind = '{SampleKind.DELIVERY}' AND value = 0)
    OR kind IN ('{SampleKind.CONNECT_FAILURE}', '{SampleKind.ERROR}'))"""
OPERATION_SQL = f"""kind IN ('{SampleKind.DELIVERY}', '{SampleKind.CONNECT}',
    '{SampleKind.CONNECT_FAILURE}', '{SampleKind.ERROR}')"""


@dataclass(frozen=True)
class ReporterFigures:
    """One reporter's own, unweighted figures in the window."""

    reporter_id: int | None
    operations: int
    failures: int
    latency_samples: int
    p95_ms: float | None  # over all of this reporter's latencies

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.operations if self.operations else None


@dataclass(frozen=True)
class WeightedTelemetry:
    """Pages' figures for one transport and window, after the per-user bounds."""

    transport: str
    window_seconds: int
    since: datetime  # the later of (until - window) and the judging floor (a resume)
    until: datetime
    min_users: int
    max_operations_per_user: int
    max_latencies_per_user: int
    reporters: tuple[ReporterFigures, ...]
    operations: float  # weighted: each reporter's operations, capped
    failures: float  # weighted: each reporter's failures, scaled like its operations
    latency_samples: int  # after the per-reporter cap
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    source: str = "pages"

    @property
    def users(self) -> int:
        return len(self.reporters)

    @property
    def counts(self) -> bool:
        """Enough distinct reporters for page telemetry to count at all."""
        return self.users >= self.min_users

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.operations if self.operations else None

    @property
    def error_rate_percent(self) -> float | None:
        return None if self.error_rate is None else self.error_rate * 100

    @property
    def consecutive_connect_failures(self) -> None:
        return None  # pages' failures interleave; "in a row" is the prober's alone

    @property
    def source_label(self) -> str:
        quorum = "" if self.counts else f", needs {self.min_users}"
        return f"pages ({self.users} users{quorum})"

    def users_over_error_rate(self, limit: float) -> int:
        """Reporters whose own error rate is above ``limit``."""
        return sum(1 for r in self.reporters if r.error_rate is not None and r.error_rate > limit)

    def users_over_latency(self, limit_ms: float) -> int:
        """Reporters whose own p95 is above ``limit_ms``."""
        return sum(1 for r in self.reporters if r.p95_ms is not None and r.p95_ms > limit_ms)

    def as_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures.pop("reporters")
        figures["since"] = self.since.isoformat()
        figures["until"] = self.until.isoformat()
        figures["users"] = self.users
        figures["counts"] = self.counts
        figures["error_rate"] = self.error_rate
        return figures


def _capped_latencies_sql(window: str) -> str:
    """The latencies that enter the figures: of a reporter with n > cap latencies, the
    first value of each of cap equal slices of its sorted values (exactly cap values
    spread over its own distribution). Parameters: the window's, then the cap 3 times."""
    return f"""
        SELECT value FROM (
          SELECT value,
            row_number() OVER (PARTITION BY reporter_id ORDER BY value) AS rank,
            count(*) OVER (PARTITION BY reporter_id) AS n
          {window} AND kind = '{SampleKind.LATENCY}'
        ) ranked
        WHERE n <= %s
           OR floor((rank - 1)::numeric * %s / n) <> floor((rank - 2)::numeric * %s / n)
    """


def _window_sql() -> str:
    return f"""
        FROM {HealthSample._meta.db_table}
        WHERE transport = %s AND origin = '{SampleOrigin.BROWSER}' AND at > %s AND at <= %s
    """


def telemetry_latency_values(
    *,
    transport: str,
    since: datetime,
    until: datetime,
    max_latencies_per_user: int | None = None,
) -> list[float]:
    """The pages' latencies of ``transport`` in ``(since, until]`` that the percentiles of
    ``telemetry_weighted`` are computed from (at most the cap per user), for tests over
    whole distributions (``rollout.analysis``). Whether they count at all is the
    quorum's decision (``telemetry_weighted(...).counts``)."""
    cap = int(
        rollout_setting("ROLLOUT_TELEMETRY_USER_MAX_LATENCIES")
        if max_latencies_per_user is None
        else max_latencies_per_user
    )
    if cap < 1:
        raise ValueError("the per-user bound must be at least 1")
    with connection.cursor() as cursor:
        cursor.execute(
            _capped_latencies_sql(_window_sql()), [transport, since, until, cap, cap, cap]
        )
        return [value for (value,) in cursor.fetchall()]


def telemetry_weighted(
    *,
    transport: str,
    window_seconds: int,
    now: datetime | None = None,
    not_before: datetime | None = None,
    min_users: int | None = None,
    max_operations_per_user: int | None = None,
    max_latencies_per_user: int | None = None,
) -> WeightedTelemetry:
    """Browser telemetry for ``transport`` over the last ``window_seconds`` (and not before
    ``not_before``), weighted so that one user's reports weigh at most a bounded share.

    The bounds default to the ``ROLLOUT_TELEMETRY_*`` settings; computed in PostgreSQL.
    """
    now = now or timezone.now()
    since = now - timedelta(seconds=window_seconds)
    if not_before is not None and not_before > since:
        since = not_before
    min_users = int(
        rollout_setting("ROLLOUT_TELEMETRY_MIN_USERS") if min_users is None else min_users
    )
    max_ops = int(
        rollout_setting("ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS")
        if max_operations_per_user is None
        else max_operations_per_user
    )
    max_latencies = int(
        rollout_setting("ROLLOUT_TELEMETRY_USER_MAX_LATENCIES")
        if max_latencies_per_user is None
        else max_latencies_per_user
    )
    if max_ops < 1 or max_latencies < 1:
        raise ValueError("the per-user bounds must be at least 1")
    window = _window_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT
              reporter_id,
              coalesce(sum(weight) FILTER (WHERE {OPERATION_SQL}), 0),
              coalesce(sum(weight) FILTER (WHERE {FAILURE_SQL}), 0),
              count(*) FILTER (WHERE kind = '{SampleKind.LATENCY}'),
              percentile_cont(0.95) WITHIN GROUP (ORDER BY value)
                FILTER (WHERE kind = '{SampleKind.LATENCY}')
            {window}
            GROUP BY reporter_id
            ORDER BY reporter_id NULLS FIRST
            """,
            [transport, since, now],
        )
        reporters = tuple(
            ReporterFigures(
                reporter_id=reporter, operations=int(ops), failures=int(fails),
                latency_samples=int(latencies), p95_ms=p95,
            )
            for reporter, ops, fails, latencies, p95 in cursor.fetchall()
        )  # fmt: skip
        cursor.execute(
            f"""
            SELECT
              count(*),
              percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY value)
            FROM ({_capped_latencies_sql(window)}) capped
            """,
            [transport, since, now, max_latencies, max_latencies, max_latencies],
        )
        latency_samples, percentiles = cursor.fetchone()
    operations = 0.0
    failures = 0.0
    for reporter in reporters:
        scale = min(1.0, max_ops / reporter.operations) if reporter.operations else 1.0
        operations += reporter.operations * scale
        failures += reporter.failures * scale
    p50, p95, p99 = percentiles if percentiles else (None, None, None)
    return WeightedTelemetry(
        transport=transport,
        window_seconds=window_seconds,
        since=since,
        until=now,
        min_users=min_users,
        max_operations_per_user=max_ops,
        max_latencies_per_user=max_latencies,
        reporters=reporters,
        operations=operations,
        failures=failures,
        latency_samples=int(latency_samples),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )
