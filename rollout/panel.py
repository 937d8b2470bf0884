"""The staff rollout panel in the admin (/admin/rollout/panel/).

Every change goes through a confirmation page that restates its effect and needs a
reason; the confirmed POST calls one service, which audits it. Non-staff users get 403
on every URL here (not the admin's redirect to its login form), and every form carries
Django's CSRF token. Staff see the panel; each change also needs its permission
(``rollout/permissions.py``): without it the form is disabled with the reason, and a POST
is refused with 403 before anything is confirmed or changed.
"""

from functools import wraps

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from rollout import charts, selectors, services
from rollout.models import STAGE_PERCENT, Alert, ForcedPromotionRequest, Stage
from rollout.permissions import rollout_permission_missing, rollout_permissions_for

CHART_BUCKETS = 30


def staff_required(view):
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            raise PermissionDenied("The rollout panel is for staff accounts.")
        return view(request, *args, **kwargs)

    return wrapper


def _health_context() -> dict:
    thresholds = selectors.thresholds_get()
    state = selectors.rollout_state_get()
    report = selectors.health_report(thresholds=thresholds, not_before=state.resumed_at)
    long_window = thresholds.latency_window_seconds
    short_window = thresholds.error_rate_window_seconds
    latency = {
        t: selectors.health_series(transport=t, window_seconds=long_window, buckets=CHART_BUCKETS)
        for t in ("supabase", "websocket")
    }
    errors = {
        t: selectors.health_series(transport=t, window_seconds=short_window, buckets=CHART_BUCKETS)
        for t in ("supabase", "websocket")
    }
    latency_limit = report.latency_limit_ms
    return {
        **_quota_context(state),
        "report": report,
        "state": state,
        "thresholds": thresholds,
        "rows": report.rows,
        "latency_limit": latency_limit,
        "latency_svg": charts.series_svg(
            title=f"p95 latency (prober), last {long_window} s", series=latency, key="p95_ms",
            buckets=CHART_BUCKETS, threshold=latency_limit,
            threshold_label="rollback above", unit=" ms",
        ),
        "error_svg": charts.series_svg(
            title=f"error rate (prober), last {short_window} s", series=errors, key="error_rate",
            buckets=CHART_BUCKETS, threshold=thresholds.error_rate_max,
            threshold_label="rollback above", unit=" %", scale=100,
        ),
    }  # fmt: skip


def _quota_context(state) -> dict:
    """The plan against this stage and the next (rollout/quotas.py), and the sink's
    coalescing window with its latency cost (events/supabase_coalescing.py)."""
    from events.supabase_coalescing import coalescing_state
    from rollout.quotas import quota_outlook

    try:
        outlook = quota_outlook(state=state)
        coalescing = coalescing_state() if outlook.plan.messages is not None else None
    except Exception as exc:  # the panel must render whatever a measurement does
        return {"quota_error": f"{type(exc).__name__}: {exc}"}
    return {"quota": outlook, "coalescing": coalescing}


@never_cache
@staff_required
@require_GET
def panel_view(request: HttpRequest) -> HttpResponse:
    state = selectors.rollout_state_get()
    context = {
        **admin.site.each_context(request),
        "title": "Rollout panel",
        "state": state,
        "percent": selectors.supabase_flag_percent(),
        "stages": Stage.choices,
        "cohorts": selectors.cohort_sizes(),
        "audit": selectors.audit_entries(limit=50),
        "alerts": selectors.open_alerts(),
        "refused": rollout_permissions_for(request.user),
        "analysis": selectors.stage_analysis_latest(state=state),
        "force_requests": selectors.forced_promotion_requests_pending(),
        **_health_context(),
    }
    return render(request, "admin/rollout/panel.html", context)


@never_cache
@staff_required
@require_GET
def health_json(request: HttpRequest) -> JsonResponse:
    """What the panel's script polls: the figures, and the health section re-rendered."""
    context = _health_context()
    return JsonResponse(
        {
            "figures": context["report"].figures(),
            "html": render_to_string("admin/rollout/_health.html", context, request=request),
        }
    )


def _describe(action: str, stage: str | None, state) -> str:
    if action == "stage":
        return (
            f"Move the rollout from stage {state.stage} ({STAGE_PERCENT[state.stage]} %) to "
            f"stage {stage} ({STAGE_PERCENT[stage]} %) of users on Supabase Realtime."
            + (" The kill switch is on: nobody moves until it is released." if state.killed else "")
        )
    if action == "kill":
        return (
            "Throw the kill switch: every open dashboard switches to the legacy WebSocket path now."
        )
    if action == "resume":
        return f"Release the kill switch: users return to stage {state.stage}."
    if action == "promotion":
        return "Change automatic promotion."
    return action


ACTIONS = ("stage", "kill", "resume", "promotion")
FORCE_ACTIONS = ("force_request", "force_approve", "force_reject")


def _force_action(request: HttpRequest, action: str, reason: str) -> HttpResponse:
    """ "Promote anyway", four eyes: one staff account asks (from the stage confirmation
    page), another approves (confirmation page, then the stage is raised) or rejects."""
    if action == "force_request":
        try:
            services.forced_promotion_request(
                stage=request.POST.get("stage", ""), actor=request.user, reason=reason
            )
        except services.RolloutError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                "Forced promotion requested: a second staff account with the permission "
                "rollout.set_stage must approve it on this panel.",
            )
        return redirect("admin:rollout_panel")
    try:
        request_id = int(request.POST.get("request_id", ""))
    except ValueError:
        return HttpResponse("request_id must be a number", status=400)
    force_request = get_object_or_404(
        ForcedPromotionRequest.objects.select_related("requested_by", "analysis"), pk=request_id
    )
    if action == "force_approve" and request.POST.get("confirm") != "yes":
        context = {
            **admin.site.each_context(request),
            "title": "Confirm forced promotion",
            "action": action, "reason": reason, "force_request": force_request,
            "description": (
                f"Approve {force_request.requested_by.get_username()}'s request: raise the "
                f"rollout from stage {force_request.from_stage} to stage "
                f"{force_request.to_stage} WITHOUT a passing analysis "
                f"(“{force_request.reason}”). Audited as forced, with both names."
            ),
            "cohorts": selectors.cohort_sizes(),
        }  # fmt: skip
        return render(request, "admin/rollout/confirm.html", context)
    try:
        decided = services.forced_promotion_decide(
            request_id=request_id, actor=request.user, approve=action == "force_approve",
            reason=reason,
        )  # fmt: skip
    except services.RolloutError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Request #{decided.pk}: {decided.get_status_display()}.")
    return redirect("admin:rollout_panel")


@never_cache
@staff_required
@require_POST
def panel_action(request: HttpRequest) -> HttpResponse:
    """Step 1 (no ``confirm``): show the effect and ask again. Step 2: do it."""
    action = request.POST.get("action", "")
    stage = request.POST.get("stage") or None
    reason = (request.POST.get("reason") or "").strip()
    if action not in ACTIONS + FORCE_ACTIONS:
        return HttpResponse("unknown action", status=400)
    refused = rollout_permission_missing(request.user, action=action)
    if refused:
        raise PermissionDenied(refused)
    if action in FORCE_ACTIONS:
        if not reason:
            messages.error(request, "A reason is required.")
            return redirect("admin:rollout_panel")
        return _force_action(request, action, reason)
    state = selectors.rollout_state_get()
    error = None
    if action == "stage" and stage not in STAGE_PERCENT:
        error = "Choose a stage."
    elif not reason:
        error = "A reason is required."
    promotion = {
        "enabled": request.POST.get("enabled") == "on",
        "dwell": request.POST.get("dwell_seconds", ""),
    }
    if action == "promotion" and not error:
        try:
            promotion["dwell"] = int(promotion["dwell"])
            if promotion["dwell"] < 0:
                raise ValueError
        except (TypeError, ValueError):
            error = "The dwell must be a whole number of seconds."
    needs_force = None
    if action == "stage" and not error and STAGE_PERCENT[stage] > STAGE_PERCENT[state.stage]:
        # A breach refuses outright (below, from the service); the analysis can be overridden.
        refusal = None
        if not services.promotion_blocked_by(state=state):
            refusal = services.promotion_analysis_refusal(state=state)
        needs_force = str(refusal) if refusal else None
    over_quota = None
    raising = action == "stage" and not error and STAGE_PERCENT[stage] > STAGE_PERCENT[state.stage]
    if raising and not needs_force:
        refused = services.promotion_quota_refusal(stage=stage, state=state)
        over_quota = str(refused) if refused else None
    force_quota = request.POST.get("force_quota") == "yes"
    if error or needs_force or request.POST.get("confirm") != "yes":
        quota_context = _quota_context(state) if action == "stage" else {}
        context = {
            **admin.site.each_context(request),
            "title": "Confirm rollout change",
            "action": action, "stage": stage, "reason": reason, "error": error,
            "promotion": promotion, "description": _describe(action, stage, state)
            if action != "stage" or stage in STAGE_PERCENT else "",
            "cohorts": selectors.cohort_sizes(), "needs_force": needs_force,
            "over_quota": over_quota, "force_quota": force_quota, **quota_context,
        }  # fmt: skip
        return render(request, "admin/rollout/confirm.html", context, status=400 if error else 200)
    try:
        if action == "stage":
            services.rollout_stage_set(
                stage=stage, actor=request.user, reason=reason, force_quota=force_quota
            )
            forced = " (over the Supabase quota: audited as forced)" if over_quota else ""
            messages.success(request, f"Stage set to {stage}{forced}.")
        elif action == "kill":
            _, changed = services.rollout_kill(actor=request.user, reason=reason)
            messages.success(request, "Kill switch thrown." if changed else "It was already on.")
        elif action == "resume":
            _, changed = services.rollout_resume(actor=request.user, reason=reason)
            messages.success(request, "Resumed." if changed else "The kill switch was off.")
        else:
            services.rollout_promotion_configure(
                enabled=promotion["enabled"], dwell_seconds=promotion["dwell"],
                actor=request.user, reason=reason,
            )  # fmt: skip
            messages.success(request, "Automatic promotion updated.")
    except services.RolloutError as exc:
        messages.error(request, str(exc))
    return redirect("admin:rollout_panel")


REPORT_FORMATS = ("html", "print", "json", "csv")


@never_cache
@staff_required
@require_GET
def report_view(request: HttpRequest) -> HttpResponse:
    """The rollout report (``rollout/report.py``): ``?format=print`` a page without the
    admin's chrome for printing, ``json`` and ``csv`` downloads."""
    from rollout.report import report_csv, rollout_report

    fmt = request.GET.get("format", "html")
    if fmt not in REPORT_FORMATS:
        return JsonResponse(
            {"error": {"code": "bad_format", "field": "format",
                       "message": f"format must be one of {', '.join(REPORT_FORMATS)}"}},
            status=400,
        )  # fmt: skip
    report = rollout_report()
    stamp = report["generated_at"][:19].replace(":", "-")
    if fmt == "json":
        response = JsonResponse(report, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="rollout-report-{stamp}.json"'
        return response
    if fmt == "csv":
        response = HttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="rollout-report-{stamp}.csv"'
        return response
    buckets = max(len(report["series"]["supabase"]), 2)
    context = {
        "title": "Rollout report",
        "report": report,
        "latency_svg": charts.series_svg(
            title="p95 latency (prober) at each analysis", series=report["series"],
            key="p95_ms", buckets=buckets, threshold=None, threshold_label="", unit=" ms",
        ),
        "error_svg": charts.series_svg(
            title="error rate (prober) at each analysis", series=report["series"],
            key="error_rate", buckets=buckets, threshold=None, threshold_label="", unit=" %",
            scale=100,
        ),
    }  # fmt: skip
    if fmt == "print":
        return render(request, "admin/rollout/report_print.html", context)
    context.update(admin.site.each_context(request))
    return render(request, "admin/rollout/report.html", context)


@never_cache
@staff_required
@require_POST
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_object_or_404(Alert, pk=alert_id)
    services.alert_acknowledge(
        alert=alert, user=request.user, reason=request.POST.get("reason", "")
    )
    messages.success(request, f"Alert {alert.kind} acknowledged.")
    return redirect("admin:rollout_panel")
