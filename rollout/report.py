"""The rollout report: what an approver outside the team reads (reads only).

One dictionary, ``rollout_report()``, is the source of the staff page
(``/admin/rollout/report/``), its print view, its JSON and CSV exports and
``manage.py rollout report [--json]``, so they never disagree:

- ``stages``: the timeline of stage runs (from stage changes in the audit log and the
  runs the analyses name), each with who started it and why, whether it was forced, and
  its analyses with their verdicts. The run in force also gets a **provisional** analysis
  computed now (``recorded: false``), so a stage that has just begun still shows the
  evidence so far;
- ``events``: every breach (the ``rollback`` and ``shadow_breach`` alerts), rollback (kill
  switch thrown), resume, forced promotion (requests, decisions, forced stage changes),
  reconciliation run and alert, in time order;
- ``series``: per transport, p95 latency and error rate (prober) at the end of each
  recorded analysis: one point per analysis over the whole rollout (health samples are
  pruned after 48 h; analyses are kept).
"""

import csv
import io
from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from rollout.models import (
    STAGE_PERCENT,
    Alert,
    AuditAction,
    AuditEntry,
    StageAnalysis,
    Transport,
)

BREACH_ALERTS = ("rollback", "shadow_breach")
# The figures of one source (prober or pages) the report shows, in this order.
LATENCY_FIGURES = ("latency_samples", "p50_ms", "p95_ms", "p99_ms", "operations", "failures",
                   "error_rate")  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def analysis_as_dict(analysis: StageAnalysis, *, recorded: bool = True) -> dict[str, Any]:
    def transport(name: str) -> dict[str, Any]:
        figures = analysis.transports.get(name, {})
        prober, pages = figures.get("prober", {}), figures.get("pages", {})
        return {
            "users": figures.get("users", {}),
            "prober": {key: prober.get(key) for key in (*LATENCY_FIGURES, "connect_failures")},
            "pages": {key: pages.get(key) for key in ("users", "counts", *LATENCY_FIGURES)},
        }

    return {
        "id": analysis.pk,
        "recorded": recorded,
        "stage": analysis.stage,
        "trigger": analysis.trigger,
        "final": analysis.final,
        "recorded_at": _iso(analysis.recorded_at),
        "window_start": _iso(analysis.window_start),
        "window_end": _iso(analysis.window_end),
        "verdict": analysis.verdict,
        "reasons": analysis.reasons,
        "transports": {name: transport(name) for name in Transport.values},
        "comparison": analysis.comparison,
        "events": analysis.events,
        "reconciliation": analysis.reconciliation,
        "thresholds": analysis.thresholds,
        "quota_headroom": analysis.quota_headroom,
    }


def _provisional_analysis(*, state, now: datetime) -> dict[str, Any]:
    from rollout import selectors
    from rollout.analysis import analysis_window, stage_analysis_compute

    fields = stage_analysis_compute(
        stage=state.stage, window_start=analysis_window(state=state, until=now), window_end=now,
        thresholds=selectors.thresholds_get(), cohorts=selectors.cohort_sizes(),
    )  # fmt: skip
    unsaved = StageAnalysis(
        **fields, stage_started_at=state.stage_started_at, trigger="manual", recorded_at=now
    )
    return analysis_as_dict(unsaved, recorded=False)


def _stage_runs(*, state, now: datetime, provisional: bool) -> list[dict[str, Any]]:
    changes = list(
        AuditEntry.objects.filter(action__in=[AuditAction.STAGE, AuditAction.FORCED])
        .exclude(from_value=F("to_value"))  # a stage set to itself starts no run
        .order_by("at", "id")
    )
    analyses = list(StageAnalysis.objects.order_by("recorded_at", "id"))
    runs: dict[tuple[str, datetime], dict[str, Any]] = {}

    def run(stage: str, started_at: datetime) -> dict[str, Any]:
        key = (stage, started_at)
        if key not in runs:
            runs[key] = {
                "stage": stage, "percent": STAGE_PERCENT.get(stage), "started_at": started_at,
                "ended_at": None, "started_by": None, "reason": "", "forced": False,
                "analyses": [],
            }  # fmt: skip
        return runs[key]

    for entry in changes:
        item = run(entry.to_value, entry.at)
        item.update(
            started_by=entry.actor_label, reason=entry.reason,
            forced=entry.action == AuditAction.FORCED,
        )  # fmt: skip
    for analysis in analyses:
        run(analysis.stage, analysis.stage_started_at)["analyses"].append(
            analysis_as_dict(analysis)
        )
    current = run(state.stage, state.stage_started_at)
    ordered = sorted(runs.values(), key=lambda item: item["started_at"])
    for item, following in zip(ordered, ordered[1:], strict=False):
        item["ended_at"] = following["started_at"]
    current["current"] = True
    if provisional:
        current["analyses"].append(_provisional_analysis(state=state, now=now))
    for item in ordered:
        item["started_at"] = _iso(item["started_at"])
        item["ended_at"] = _iso(item["ended_at"])
        item.setdefault("current", False)
        last = item["analyses"][-1] if item["analyses"] else None
        item["verdict"] = last["verdict"] if last else None
    return ordered


def _timeline_events() -> list[dict[str, Any]]:
    from reconciliation.models import ReconciliationRun

    events: list[dict[str, Any]] = []
    kinds = {
        AuditAction.KILL: "rollback",
        AuditAction.RESUME: "resume",
        AuditAction.FORCED: "forced_promotion",
        AuditAction.FORCE_REQUEST: "forced_promotion_request",
        AuditAction.FORCE_DECISION: "forced_promotion_decision",
    }
    for entry in AuditEntry.objects.filter(action__in=list(kinds)).order_by("at", "id"):
        events.append(
            {
                "at": _iso(entry.at),
                "kind": kinds[entry.action],
                "actor": entry.actor_label,
                "from": entry.from_value,
                "to": entry.to_value,
                "detail": entry.reason,
            }  # fmt: skip
        )
    for alert in Alert.objects.order_by("first_seen", "id"):
        events.append(
            {
                "at": _iso(alert.first_seen),
                "kind": "breach" if alert.kind in BREACH_ALERTS else "alert",
                "actor": "system",
                "from": alert.severity,
                "to": alert.kind,
                "detail": f"{alert.message} (seen {alert.count}×, last {_iso(alert.last_seen)}"
                + (", acknowledged" if alert.acknowledged_at else ", open")
                + ")",
            }  # fmt: skip
        )
    for run in ReconciliationRun.objects.order_by("started_at", "id"):
        events.append(
            {
                "at": _iso(run.started_at),
                "kind": "reconciliation",
                "actor": run.trigger,
                "from": f"run {run.pk}",
                "to": run.status,
                "detail": f"{run.events_judged} events judged, {run.discrepancy_count} "
                "discrepancies" + (f": {run.error}" if run.error else ""),
            }  # fmt: skip
        )
    events.sort(key=lambda event: event["at"] or "")
    return events


def _series(stages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = {name: [] for name in Transport.values}
    index = 0
    for stage in stages:
        for analysis in stage["analyses"]:
            for name in Transport.values:
                prober = analysis["transports"][name]["prober"]
                series[name].append(
                    {
                        "bucket": index,
                        "at": analysis["window_end"],
                        "stage": stage["stage"],
                        "p95_ms": prober["p95_ms"],
                        "error_rate": prober["error_rate"],
                    }  # fmt: skip
                )
            index += 1
    return series


def rollout_report(*, now: datetime | None = None, provisional: bool = True) -> dict[str, Any]:
    """The whole rollout as one JSON-ready dictionary (see the module docstring)."""
    from rollout import selectors

    now = now or timezone.now()
    state = selectors.rollout_state_get()
    stages = _stage_runs(state=state, now=now, provisional=provisional)
    return {
        "generated_at": _iso(now),
        "state": {
            "stage": state.stage,
            "killed": state.killed,
            "kill_reason": state.kill_reason,
            "stage_started_at": _iso(state.stage_started_at),
            "resumed_at": _iso(state.resumed_at),
        },
        "stages": stages,
        "events": _timeline_events(),
        "series": _series(stages),
    }


CSV_COLUMNS = [
    "at", "kind", "stage", "verdict", "actor", "detail",
    "supabase_p95_ms", "websocket_p95_ms", "supabase_error_rate", "websocket_error_rate",
    "supabase_users", "websocket_users",
]  # fmt: skip


def report_csv(report: dict[str, Any]) -> str:
    """One row per stage run, analysis and event, in time order (a spreadsheet's view)."""
    rows: list[dict[str, Any]] = []
    for stage in report["stages"]:
        rows.append(
            {
                "at": stage["started_at"],
                "kind": "forced_stage" if stage["forced"] else "stage",
                "stage": stage["stage"],
                "actor": stage["started_by"] or "",
                "detail": stage["reason"],
                "verdict": stage["verdict"] or "",
            }  # fmt: skip
        )
        for analysis in stage["analyses"]:
            sb, ws = analysis["transports"]["supabase"], analysis["transports"]["websocket"]
            rows.append(
                {
                    "at": analysis["window_end"],
                    "kind": "analysis" if analysis["recorded"] else "analysis (provisional)",
                    "stage": stage["stage"],
                    "verdict": analysis["verdict"],
                    "detail": "; ".join(analysis["reasons"]),
                    "supabase_p95_ms": sb["prober"]["p95_ms"],
                    "websocket_p95_ms": ws["prober"]["p95_ms"],
                    "supabase_error_rate": sb["prober"]["error_rate"],
                    "websocket_error_rate": ws["prober"]["error_rate"],
                    "supabase_users": sb["users"].get("cohort"),
                    "websocket_users": ws["users"].get("cohort"),
                }  # fmt: skip
            )
    for event in report["events"]:
        rows.append(
            {
                "at": event["at"],
                "kind": event["kind"],
                "actor": event["actor"],
                "detail": f"{event['from']} → {event['to']}: {event['detail']}",
            }  # fmt: skip
        )
    rows.sort(key=lambda row: row["at"] or "")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, restval="")
    writer.writeheader()
    for row in rows:
        # A cell that a spreadsheet would run as a formula is quoted as text.
        writer.writerow(
            {
                key: f"'{value}" if isinstance(value, str) and value[:1] in "=+-@" else value
                for key, value in row.items()
            }
        )
    return out.getvalue()
