"""Stage analysis: the evidence that a stage was good, and its verdict.

An analysis covers one window of one stage's run (from the later of the stage's start and
the last resume, to now or to the stage's end) and compares the Supabase path against the
legacy path, which is the baseline, over the **whole distributions**:

- **latency**: ``scipy.stats.mannwhitneyu(supabase, legacy, alternative="greater")`` asks
  whether Supabase's latencies are stochastically greater than legacy's. Its effect size
  is the probability of superiority, U / (n_supabase × n_legacy): the chance that a
  random Supabase delivery is slower than a random legacy one (0.5: no difference).
  Supabase is **worse** when p < the significance level AND the effect is above the
  allowed effect size: with thousands of samples a test finds any difference, so the
  effect size says how much is too much. A p95 can hide a worse bulk; this cannot.
- **errors**: ``scipy.stats.fisher_exact`` (one-sided, "greater") on failures and
  successes of both paths. Worse when p < the significance level AND Supabase's rate
  exceeds legacy's by more than the allowed increase. Above the rollback rule's
  ``error_rate_max`` Supabase fails on its own, whatever legacy does.

Each **source** is compared on its own: the prober (full weight, one client on one clock
for both paths) and pages' telemetry (``rollout.weighting``: per-user caps, and only with
the quorum of distinct users on both paths). A check runs only with at least
``analysis_min_samples`` on each side. The verdict:

- **fail**: any check of any source finds Supabase worse;
- **pass**: no check fails, and at least one source had enough samples for both its
  latency and its error check;
- **inconclusive**: otherwise (too few samples to say).

``quota_headroom``: the Supabase plan's quotas against the stage's projected load and the
next stage's (``rollout/quotas.py``), measured when the analysis is recorded (open pages
are a live count, not a history): connections and messages/s, with the headroom left.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Sum
from scipy import stats

from rollout.models import (
    HealthSample,
    RolloutState,
    SampleKind,
    SampleOrigin,
    Thresholds,
    Transport,
    Verdict,
)
from rollout.weighting import telemetry_latency_values, telemetry_weighted

# Latencies read per transport and source: a day of the prober every 5 s is ~17,000.
MAX_VALUES = 200_000


def _finite(value) -> float | None:
    """A test's figure as JSON can hold it (jsonb refuses NaN): None when undefined."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Check:
    """One comparison of one source: ``outcome`` is ok, worse or too_few."""

    metric: str  # latency | errors
    outcome: str
    figures: dict[str, Any]
    reason: str = ""


@dataclass
class SourceResult:
    source: str  # prober | pages
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def conclusive(self) -> bool:
        return all(check.outcome != "too_few" for check in self.checks) and len(self.checks) == 2

    def as_dict(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "conclusive": self.conclusive,
            **{
                check.metric: {"outcome": check.outcome, "reason": check.reason, **check.figures}
                for check in self.checks
            },
        }


def latency_compare(
    *, supabase: list[float], legacy: list[float], thresholds: Thresholds, source: str
) -> Check:
    """Mann-Whitney U, one-sided: are Supabase's latencies stochastically greater?"""
    minimum = thresholds.analysis_min_samples
    figures: dict[str, Any] = {"supabase_n": len(supabase), "legacy_n": len(legacy)}
    if len(supabase) < minimum or len(legacy) < minimum:
        return Check(
            "latency", "too_few", figures,
            f"{source}: too few latencies to compare ({len(supabase)} Supabase, "
            f"{len(legacy)} legacy; {minimum} needed on each)",
        )  # fmt: skip
    tolerance = thresholds.analysis_latency_tolerance_ms
    shifted = [value - tolerance for value in supabase] if tolerance else supabase
    result = stats.mannwhitneyu(shifted, legacy, alternative="greater")
    effect = float(result.statistic) / (len(supabase) * len(legacy))
    figures.update(
        u=float(result.statistic), p_value=_finite(result.pvalue), effect=effect,
        tolerance_ms=tolerance,
    )  # fmt: skip
    alpha, allowed = thresholds.analysis_significance_level, thresholds.analysis_max_effect_size
    beyond = f" by more than {tolerance:g} ms" if tolerance else ""
    if result.pvalue < alpha and effect > allowed:
        return Check(
            "latency", "worse", figures,
            f"{source}: Supabase latencies are stochastically greater than legacy's{beyond} "
            f"(Mann-Whitney U, p = {result.pvalue:.2g} < {alpha:g}; a Supabase delivery is "
            f"slower{beyond} than a legacy one {effect:.0%} of the time, allowed {allowed:.0%})",
        )  # fmt: skip
    return Check(
        "latency", "ok", figures,
        f"{source}: latency no worse than allowed (p = {result.pvalue:.2g}, "
        f"slower {effect:.0%} of the time, allowed {allowed:.0%})",
    )  # fmt: skip


def errors_compare(
    *,
    supabase_failures: float,
    supabase_operations: float,
    legacy_failures: float,
    legacy_operations: float,
    thresholds: Thresholds,
    source: str,
) -> Check:
    """Fisher's exact test, one-sided, and the rollback rule's absolute ceiling."""
    minimum = thresholds.analysis_min_samples
    sb_ops, sb_fail = round(supabase_operations), round(supabase_failures)
    ws_ops, ws_fail = round(legacy_operations), round(legacy_failures)
    figures: dict[str, Any] = {
        "supabase_operations": sb_ops, "supabase_failures": sb_fail,
        "legacy_operations": ws_ops, "legacy_failures": ws_fail,
        "supabase_error_rate": sb_fail / sb_ops if sb_ops else None,
        "legacy_error_rate": ws_fail / ws_ops if ws_ops else None,
    }  # fmt: skip
    if sb_ops < minimum:
        return Check(
            "errors", "too_few", figures,
            f"{source}: too few Supabase operations ({sb_ops}; {minimum} needed)",
        )  # fmt: skip
    sb_rate = sb_fail / sb_ops
    if sb_rate > thresholds.error_rate_max:
        return Check(
            "errors", "worse", figures,
            f"{source}: Supabase error rate {sb_rate:.1%} is above the rollback limit "
            f"{thresholds.error_rate_max:.1%}",
        )  # fmt: skip
    if ws_ops < minimum:
        return Check(
            "errors", "too_few", figures,
            f"{source}: too few legacy operations to compare error rates ({ws_ops}; "
            f"{minimum} needed)",
        )  # fmt: skip
    ws_rate = ws_fail / ws_ops
    table = [[sb_fail, sb_ops - sb_fail], [ws_fail, ws_ops - ws_fail]]
    result = stats.fisher_exact(table, alternative="greater")
    figures["p_value"] = _finite(result.pvalue)
    alpha, allowed = (
        thresholds.analysis_significance_level,
        thresholds.analysis_error_rate_max_increase,
    )
    if result.pvalue < alpha and sb_rate - ws_rate > allowed:
        return Check(
            "errors", "worse", figures,
            f"{source}: Supabase error rate {sb_rate:.1%} against legacy {ws_rate:.1%} "
            f"(Fisher's exact, p = {result.pvalue:.2g} < {alpha:g}; allowed increase "
            f"{allowed:.1%})",
        )  # fmt: skip
    return Check(
        "errors", "ok", figures,
        f"{source}: error rate {sb_rate:.1%} against legacy {ws_rate:.1%} (p = "
        f"{result.pvalue:.2g}, allowed increase {allowed:.1%})",
    )  # fmt: skip


def verdict_reach(results: list[SourceResult]) -> tuple[str, list[str]]:
    """pass, fail or inconclusive, and the sentences that say why."""
    checks = [check for result in results for check in result.checks]
    worse = [check.reason for check in checks if check.outcome == "worse"]
    if worse:
        return Verdict.FAIL, worse
    if any(result.conclusive for result in results):
        return Verdict.PASS, [check.reason for check in checks if check.outcome == "ok"]
    reasons = [check.reason for check in checks if check.outcome == "too_few"]
    reasons += [result.note for result in results if result.note]
    return Verdict.INCONCLUSIVE, reasons


def _prober_latencies(*, transport: str, since: datetime, until: datetime) -> list[float]:
    return list(
        HealthSample.objects.filter(
            transport=transport, origin=SampleOrigin.PROBER, kind=SampleKind.LATENCY,
            at__gt=since, at__lte=until,
        ).values_list("value", flat=True)[:MAX_VALUES]
    )  # fmt: skip


def _events_figures(*, since: datetime, until: datetime) -> dict[str, Any]:
    from events.models import Delivery, Route
    from reconciliation.models import ReconciliationRun

    delivered: dict[str, dict[str, int]] = {}
    rows = (
        Delivery.objects.filter(event__received_at__gt=since, event__received_at__lte=until)
        .values("sink", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        delivered.setdefault(row["sink"], {})[row["status"]] = row["n"]
    validated = ReconciliationRun.objects.filter(
        started_at__gt=since, started_at__lte=until
    ).aggregate(judged=Sum("events_judged"), agreeing=Sum("events_agreeing"))
    return {
        "delivered": delivered,  # per sink, per delivery status, of events received in window
        "validated": {
            "events_judged": validated["judged"] or 0,
            "events_agreeing": validated["agreeing"] or 0,
        },
        "routes": {
            route.criticality: {
                "to_websocket": route.to_websocket,
                "to_supabase": route.to_supabase,
                "supabase_sample_percent": float(route.supabase_sample_percent),
            }
            for route in Route.objects.order_by("criticality")
        },
    }


def _reconciliation_figures(*, since: datetime, until: datetime) -> dict[str, Any]:
    from reconciliation.models import ReconciliationRun

    runs = list(
        ReconciliationRun.objects.filter(started_at__gt=since, started_at__lte=until)
        .order_by("started_at")
        .values("id", "status", "discrepancy_count", "started_at")
    )
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run["status"]] = by_status.get(run["status"], 0) + 1
    return {
        "runs": len(runs),
        "by_status": by_status,
        "discrepancies": sum(run["discrepancy_count"] or 0 for run in runs),
        "run_ids": [run["id"] for run in runs[-100:]],
    }


def _connect_failures(*, transport: str, since: datetime, until: datetime) -> int:
    return (
        HealthSample.objects.filter(
            transport=transport, origin=SampleOrigin.PROBER, kind=SampleKind.CONNECT_FAILURE,
            at__gt=since, at__lte=until,
        ).aggregate(n=Sum("weight"))["n"]
        or 0
    )  # fmt: skip


def analysis_window(*, state: RolloutState, until: datetime) -> datetime:
    """Where the analysis of the stage in force starts: its start, or a later resume
    (the samples that caused a rollback are not judged again, as in the rules)."""
    start = state.stage_started_at
    if state.resumed_at is not None and state.resumed_at > start:
        start = state.resumed_at
    return min(start, until)


def stage_analysis_compute(
    *, stage: str, window_start: datetime, window_end: datetime, thresholds: Thresholds,
    cohorts: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    """The fields of a ``StageAnalysis`` for ``stage`` over ``(window_start, window_end]``;
    reads only, saves nothing."""
    from rollout.selectors import transport_health

    seconds = max(1, math.ceil((window_end - window_start).total_seconds()) + 1)
    transports: dict[str, Any] = {}
    prober, pages, values = {}, {}, {}
    for transport in Transport.values:
        prober[transport] = transport_health(
            transport=transport, window_seconds=seconds, now=window_end,
            origin=SampleOrigin.PROBER, not_before=window_start,
        )  # fmt: skip
        pages[transport] = telemetry_weighted(
            transport=transport, window_seconds=seconds, now=window_end, not_before=window_start
        )
        values[("prober", transport)] = _prober_latencies(
            transport=transport, since=window_start, until=window_end
        )
        values[("pages", transport)] = (
            telemetry_latency_values(transport=transport, since=window_start, until=window_end)
            if pages[transport].counts
            else []
        )
        transports[transport] = {
            "users": {
                "cohort": cohorts.get(transport, 0),
                "page_reporters": pages[transport].users,
            },
            "prober": {
                **prober[transport].as_dict(),
                "connect_failures": _connect_failures(
                    transport=transport, since=window_start, until=window_end
                ),
            },
            "pages": pages[transport].as_dict(),
        }

    results = []
    for source in ("prober", "pages"):
        result = SourceResult(source)
        if source == "pages" and not all(p.counts for p in pages.values()):
            result.note = (
                f"pages: not counted (reporters: {pages['supabase'].users} on Supabase, "
                f"{pages['websocket'].users} on legacy; {pages['supabase'].min_users} needed "
                "on each)"
            )
            results.append(result)
            continue
        figures = prober if source == "prober" else pages
        sb, ws = figures[Transport.SUPABASE], figures[Transport.WEBSOCKET]
        result.checks.append(
            latency_compare(
                supabase=values[(source, Transport.SUPABASE)],
                legacy=values[(source, Transport.WEBSOCKET)],
                thresholds=thresholds,
                source=source,
            )  # fmt: skip
        )
        result.checks.append(
            errors_compare(
                supabase_failures=sb.failures,
                supabase_operations=sb.operations,
                legacy_failures=ws.failures,
                legacy_operations=ws.operations,
                thresholds=thresholds,
                source=source,
            )  # fmt: skip
        )
        results.append(result)
    verdict, reasons = verdict_reach(results)
    return {
        "stage": stage,
        "window_start": window_start,
        "window_end": window_end,
        "verdict": verdict,
        "reasons": reasons,
        "transports": transports,
        "comparison": {result.source: result.as_dict() for result in results},
        "events": _events_figures(since=window_start, until=window_end),
        "reconciliation": _reconciliation_figures(since=window_start, until=window_end),
        "thresholds": {
            "significance_level": thresholds.analysis_significance_level,
            "min_samples": thresholds.analysis_min_samples,
            "max_effect_size": thresholds.analysis_max_effect_size,
            "latency_tolerance_ms": thresholds.analysis_latency_tolerance_ms,
            "error_rate_max_increase": thresholds.analysis_error_rate_max_increase,
            "error_rate_max": thresholds.error_rate_max,
        },
        "quota_headroom": quota_headroom_figures(stage=stage),
    }


def quota_headroom_figures(*, stage: str) -> dict[str, Any]:
    """The plan against ``stage`` and the next stage, at the load measured now; what could
    not be measured is said, never guessed."""
    from django.utils import timezone

    from rollout.quotas import measured_load, next_stage, stage_project
    from rollout.selectors import rollout_state_get

    try:
        state = rollout_state_get()
        load = measured_load()
        following = next_stage(stage)
        current = stage_project(stage=stage, load=load, state=state)
        return {
            "measured_at": timezone.now().isoformat(),
            "plan": current.plan,
            "load": load.as_dict(),
            "stage": current.as_dict(),
            "next": stage_project(stage=following, load=load, state=state).as_dict()
            if following
            else None,
        }
    except Exception as exc:  # the verdict does not depend on it; say why it is missing
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
