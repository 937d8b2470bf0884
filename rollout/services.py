"""Writes of the rollout app: stage, kill switch, preferences, audit, samples, alerts.

Every function is keyword-only and transactional. Side effects that leave the database
(control messages to open dashboards, alert delivery) are queued with
``transaction.on_commit``, so nothing is ever announced for a change that rolled back.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from rollout import selectors
from rollout.conf import rollout_setting
from rollout.models import (
    STAGE_PERCENT,
    SUPABASE_REALTIME_FLAG,
    Alert,
    AlertSeverity,
    AnalysisTrigger,
    AuditAction,
    AuditEntry,
    Flag,
    ForcedPromotionRequest,
    ForceRequestStatus,
    HealthSample,
    RolloutState,
    SampleKind,
    SampleOrigin,
    Stage,
    StageAnalysis,
    Transport,
    TransportChoice,
    TransportPreference,
    Verdict,
)
from rollout.open_pages import open_page_seen

logger = logging.getLogger(__name__)

SYSTEM = "system"
# pg_try_advisory_xact_lock keys ("rollout", "rollout"+1). The promotion check has its own,
# so that it never makes an evaluation skip a run; both lock the state row to write it.
EVALUATION_LOCK_KEY = 0x726F6C6C6F7574
PROMOTION_LOCK_KEY = EVALUATION_LOCK_KEY + 1


class RolloutError(ValueError):
    """A refused rollout change (bad stage, missing reason, ...); the message says why."""


# --- Alerts -------------------------------------------------------------------------------


def _alert_delivery_enqueue(alert_id: int) -> None:
    from rollout.tasks import alert_deliver

    try:
        alert_deliver.delay(alert_id)
    except Exception:  # the broker being down must not undo the alert itself
        logger.exception("could not queue delivery of alert %s", alert_id)


def alert_raise(
    *, kind: str, severity: str, message: str, figures: dict[str, Any] | None = None
) -> Alert:
    """Record an alert, or bump the open one of the same kind.

    A new alert is delivered (email to ADMINS, optional webhook) after commit by a Celery
    task; a repeat while one of its kind is still unacknowledged only updates ``count``,
    ``last_seen``, the message and the figures, so a condition seen every 15 s notifies
    once. Safe to call inside the caller's transaction (deliveries wait for its commit).
    """
    if severity not in AlertSeverity.values:
        raise ValueError(f"severity must be one of {AlertSeverity.values}, not {severity!r}")
    if not kind:
        raise ValueError("kind is required")
    figures = figures or {}
    # Two attempts: a concurrent raiser may create the open alert between our read and
    # our insert; the partial unique index turns that into an IntegrityError, and the
    # second pass then finds and bumps its row.
    for attempt in range(2):
        try:
            with transaction.atomic():
                now = timezone.now()
                alert = (
                    Alert.objects.select_for_update()
                    .filter(kind=kind, acknowledged_at__isnull=True)
                    .first()
                )
                if alert is not None:
                    alert.count += 1
                    alert.last_seen = now
                    alert.message = message
                    alert.figures = figures
                    # A repeat may be more serious than the first; never less.
                    order = list(AlertSeverity.values)
                    if order.index(severity) > order.index(alert.severity):
                        alert.severity = severity
                    alert.save(
                        update_fields=["count", "last_seen", "message", "figures", "severity"]
                    )
                    return alert
                alert = Alert.objects.create(
                    kind=kind,
                    severity=severity,
                    message=message,
                    figures=figures,
                    first_seen=now,
                    last_seen=now,
                )
                transaction.on_commit(lambda alert_id=alert.id: _alert_delivery_enqueue(alert_id))
                return alert
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def alert_acknowledge(*, alert: Alert, user, reason: str = "") -> Alert:
    """Close an open alert (audited); the next alert of its kind opens a new one."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.acknowledged_at is None:
            alert.acknowledged_at = timezone.now()
            alert.acknowledged_by = user
            alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
            audit_record(
                actor=user, action=AuditAction.ALERT_ACK, from_value=f"alert {alert.pk}",
                to_value=alert.kind, reason=reason or "acknowledged",
                figures={"alert": {"kind": alert.kind, "count": alert.count,
                                   "message": alert.message}},
            )  # fmt: skip
        return alert


def alert_deliver(*, alert_id: int) -> None:
    """Email the admins and post to the webhook; called by the Celery task.

    Re-reads the alert (it may have been acknowledged or deleted since); records the
    outcome on the row. Raises nothing for a missing alert.
    """
    from rollout import notify

    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None or alert.delivered_at is not None:
        return
    errors = notify.alert_notify(alert=alert)
    Alert.objects.filter(pk=alert_id).update(
        delivered_at=timezone.now(), delivery_error="; ".join(errors)[:2000]
    )


# --- Control messages ------------------------------------------------------------------


def control_broadcast(*, control: dict[str, Any]) -> dict[str, str | None]:
    """Send a control message on BOTH transports; return each one's error (None: sent).

    Each transport is tried on its own so that a dead Supabase never stops the legacy
    feed from hearing "switch to websocket", which is the message that matters most.
    """
    from events import sinks, supabase_client

    outcome: dict[str, str | None] = {}
    try:
        sinks.control_broadcast_legacy(control=control)
        outcome[Transport.WEBSOCKET] = None
    except Exception as exc:
        logger.exception("control message on the legacy feed failed")
        outcome[Transport.WEBSOCKET] = f"{type(exc).__name__}: {exc}"
    if supabase_client.supabase_configured():
        try:
            async_to_sync(supabase_client.realtime_broadcast)(
                topic=supabase_client.CONTROL_TOPIC,
                event=supabase_client.CONTROL_EVENT,
                payload=control,
            )
            outcome[Transport.SUPABASE] = None
        except Exception as exc:
            logger.exception("control message on Supabase Realtime failed")
            outcome[Transport.SUPABASE] = f"{type(exc).__name__}: {exc}"
    else:
        outcome[Transport.SUPABASE] = "supabase not configured"
    return outcome


def _control_on_commit(control: dict[str, Any]) -> None:
    transaction.on_commit(lambda: control_broadcast(control=control))


# Control messages reach every page, staff or not, so they carry no staff reason: staff
# pages read it from GET /api/transport, which gives it to staff only.


def switch_control() -> dict[str, Any]:
    return {"action": "switch_transport", "transport": Transport.WEBSOCKET.value}


def transport_changed_control(*, state: RolloutState) -> dict[str, Any]:
    """Pages re-read their transport (GET /api/transport) when they receive this."""
    return {"action": "transport_changed", "stage": state.stage, "killed": state.killed}


# --- Stage, kill switch, preferences -----------------------------------------------------


def _actor_fields(actor) -> dict[str, Any]:
    if actor is None:
        return {"actor": None, "actor_label": SYSTEM}
    return {"actor": actor, "actor_label": actor.get_username()}


def _reason_required(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RolloutError("a reason is required")
    return reason


def _state_locked() -> RolloutState:
    RolloutState.objects.get_or_create(id=1)
    return RolloutState.objects.select_for_update().get(id=1)


def _figures_now() -> dict[str, Any]:
    try:
        # A savepoint, so that a failed query does not poison the caller's transaction.
        with transaction.atomic():
            return selectors.health_report().figures()
    except Exception as exc:  # the audit entry matters more than its figures
        logger.exception("health figures unavailable")
        return {"error": f"{type(exc).__name__}: {exc}"}


def audit_record(
    *,
    actor,
    action: str,
    from_value: str,
    to_value: str,
    reason: str,
    figures: dict[str, Any] | None = None,
    subject_user=None,
    at: datetime | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        at=at or timezone.now(),
        **_actor_fields(actor),
        action=action,
        from_value=from_value,
        to_value=to_value,
        reason=reason,
        figures=figures if figures is not None else _figures_now(),
        subject_user=subject_user,
    )


def promotion_blocked_by(*, state: RolloutState, now: datetime | None = None) -> list[str]:
    """The breaches that block a promotion now (empty: none). In shadow this is how a
    breach shows: an alert and a blocked promotion, never the kill switch."""
    with transaction.atomic():  # a savepoint: a failed read must not poison the caller's
        report = selectors.health_report(now=now, not_before=state.resumed_at)
    return [breach.message for breach in report.breaches]


class PromotionNeedsAnalysis(RolloutError):
    """Raising the stage without a passing analysis of the stage in force."""

    def __init__(self, *, analysis: StageAnalysis | None, message: str) -> None:
        super().__init__(message)
        self.analysis = analysis


def promotion_analysis_refusal(*, state: RolloutState) -> PromotionNeedsAnalysis | None:
    """Why the stage in force may not be raised on its evidence (None: its latest
    analysis passes)."""
    analysis = selectors.stage_analysis_latest(state=state)
    if analysis is None:
        return PromotionNeedsAnalysis(
            analysis=None,
            message=f"promotion needs a passing analysis of stage {state.stage}, and none has "
            "been recorded since it began (one is recorded every 5 minutes; `manage.py rollout "
            "analyse` records one now)",
        )
    if analysis.verdict != Verdict.PASS:
        return PromotionNeedsAnalysis(
            analysis=analysis,
            message=f"promotion needs a passing analysis of stage {state.stage}; the latest "
            f"(#{analysis.pk}, {analysis.window_end:%Y-%m-%d %H:%M:%S}) is "
            f"{analysis.verdict}: " + "; ".join(analysis.reasons[:3]),
        )
    return None


class QuotaExceeded(RolloutError):
    """Raising the stage would exceed a Supabase quota of the plan (``rollout/quotas.py``)."""

    def __init__(self, *, projection) -> None:
        super().__init__(
            "stage change refused: " + "; ".join(projection.exceeded) + ". Raise the plan "
            "(SUPABASE_PLAN), or force it with a reason (audited); lowering is always allowed."
        )
        self.projection = projection


def promotion_quota_refusal(*, stage: str, state: RolloutState) -> QuotaExceeded | None:
    """Why raising to ``stage`` would exceed the plan's quotas (None: it fits). A failure
    to measure is logged and refuses nothing: the quota guard must not block a rollout
    on a Redis outage, and the kill switch is there for what it misses."""
    from rollout.quotas import stage_quota_refusal

    try:
        with transaction.atomic():  # a savepoint: a failed read must not poison the caller's
            projection = stage_quota_refusal(stage=stage, state=state)
    except Exception:
        logger.exception("quota projection unavailable; stage change not judged on quotas")
        return None
    return QuotaExceeded(projection=projection) if projection is not None else None


def rollout_stage_set(
    *, stage: str, actor, reason: str, force: bool = False, approved_by=None,
    force_quota: bool = False,
) -> RolloutState:  # fmt: skip
    """Move to ``stage`` (shadow, 10, 50, 100): the flag's percent follows in the same
    transaction. ``actor`` None means the system (automatic promotion).

    Raising the stage is refused while the Supabase path breaches a threshold (judged as
    the rollback rules judge it, since the last resume), and unless the latest analysis of
    the stage in force passes (``PromotionNeedsAnalysis``). ``force`` skips the analysis
    (never the breach) and is audited as ``forced``: the command line's ``--force``, or a
    second staff account's approval (``approved_by``, see
    ``forced_promotion_decide``). Raising is also refused when the stage's projected load
    exceeds a quota of the Supabase plan (``QuotaExceeded``, ``rollout/quotas.py``) unless
    ``force_quota``, audited as ``forced`` with the projection. Lowering is never refused.

    After commit the analysis of the stage that ended is recorded (``final``).
    """
    if stage not in STAGE_PERCENT:
        raise RolloutError(f"unknown stage {stage!r}: choose one of {', '.join(STAGE_PERCENT)}")
    reason = _reason_required(reason)
    with transaction.atomic():
        state = _state_locked()
        previous = state.stage
        previous_started_at = state.stage_started_at
        raising = STAGE_PERCENT[stage] > STAGE_PERCENT[previous]
        forced_over = over_quota = None
        if raising:
            blocked = promotion_blocked_by(state=state)
            if blocked:
                raise RolloutError(
                    f"promotion blocked: {'; '.join(blocked)}. Fix the Supabase path (or the "
                    "thresholds) first; lowering the stage is always allowed."
                )
            forced_over = promotion_analysis_refusal(state=state)
            if forced_over is not None and not force:
                raise forced_over
            over_quota = promotion_quota_refusal(stage=stage, state=state)
            if over_quota is not None and not force_quota:
                raise over_quota
        flag, _ = Flag.objects.select_for_update().get_or_create(
            name=SUPABASE_REALTIME_FLAG, defaults={"superusers": False}
        )
        flag.percent = Decimal(STAGE_PERCENT[stage])
        flag.save(update_fields=["percent", "modified"])
        # The cohorts of the stage that ends, for its final analysis.
        cohorts = selectors.cohort_sizes() if previous != stage else {}
        now = timezone.now()
        state.stage = stage
        if previous != stage:
            state.stage_started_at = now
        # A stage change restarts the promotion dwell: the new cohort must prove itself.
        state.dwell_started_at = now if state.auto_promotion_enabled else None
        state.save(update_fields=["stage", "stage_started_at", "dwell_started_at", "updated_at"])
        if forced_over is not None or over_quota is not None:
            figures = _figures_now()
            if forced_over is not None:
                analysis = forced_over.analysis
                figures["forced_over"] = {
                    "analysis_id": analysis.pk if analysis else None,
                    "verdict": analysis.verdict if analysis else None,
                    "refusal": str(forced_over),
                    "approved_by": approved_by.get_username() if approved_by else None,
                }
            if over_quota is not None:
                figures["forced_over_quota"] = {
                    "refusal": str(over_quota),
                    "projection": over_quota.projection.as_dict(),
                }
            audit_record(
                actor=actor, action=AuditAction.FORCED, from_value=previous, to_value=stage,
                reason=reason, figures=figures, at=now,
            )  # fmt: skip
        else:
            # Dated like the stage's start, so the report pairs the entry with the run.
            audit_record(
                actor=actor, action=AuditAction.STAGE, from_value=previous, to_value=stage,
                reason=reason, at=now,
            )  # fmt: skip
        if previous != stage:
            transaction.on_commit(
                lambda: _stage_end_analysis_enqueue(
                    stage=previous,
                    stage_started_at=previous_started_at,
                    ended_at=now,
                    resumed_at=state.resumed_at,
                    cohorts=cohorts,
                )  # fmt: skip
            )
        # While killed nobody moves, so only an effective change is announced.
        if previous != stage and not state.killed:
            _control_on_commit(transport_changed_control(state=state))
    return state


# --- Stage analyses and forced promotions ------------------------------------------------

ANALYSIS_LOCK_KEY = EVALUATION_LOCK_KEY + 2


def _analysis_save(
    *, stage: str, stage_started_at: datetime, window_start: datetime, window_end: datetime,
    trigger: str, final: bool, cohorts: dict[str, int],
) -> StageAnalysis:  # fmt: skip
    from rollout.analysis import stage_analysis_compute

    fields = stage_analysis_compute(
        stage=stage, window_start=window_start, window_end=window_end,
        thresholds=selectors.thresholds_get(), cohorts=cohorts,
    )  # fmt: skip
    return StageAnalysis.objects.create(
        **fields, stage_started_at=stage_started_at, trigger=trigger, final=final
    )


def stage_analysis_record(
    *, trigger: str = AnalysisTrigger.PERIODIC, now: datetime | None = None
) -> StageAnalysis | None:
    """Record an analysis of the stage in force, from its start (or the last resume) to
    ``now``. Returns None when another recording holds the lock (a periodic run then
    skips; two never overlap)."""
    from rollout.analysis import analysis_window

    now = now or timezone.now()
    with transaction.atomic():
        if not _evaluation_lock(ANALYSIS_LOCK_KEY):
            return None
        state = selectors.rollout_state_get()
        return _analysis_save(
            stage=state.stage, stage_started_at=state.stage_started_at,
            window_start=analysis_window(state=state, until=now), window_end=now,
            trigger=trigger, final=False, cohorts=selectors.cohort_sizes(),
        )  # fmt: skip


def _stage_end_analysis_enqueue(
    *, stage: str, stage_started_at: datetime, ended_at: datetime,
    resumed_at: datetime | None, cohorts: dict[str, int],
) -> None:  # fmt: skip
    """After a stage change commits: queue the final analysis of the stage that ended (a
    worker computes it, so neither a request nor the promotion task waits for it). With
    the broker down it is recorded here instead; a failure is logged, never raised: the
    change is done and must not look as if it failed."""
    from rollout.tasks import stage_analysis_final_record as task

    arguments = {
        "stage": stage, "stage_started_at": stage_started_at.isoformat(),
        "ended_at": ended_at.isoformat(),
        "resumed_at": resumed_at.isoformat() if resumed_at else None, "cohorts": cohorts,
    }  # fmt: skip
    try:
        task.delay(**arguments)
        return
    except Exception:
        logger.exception("could not queue the final analysis of stage %s; recording it now", stage)
    try:
        stage_analysis_final_record(
            stage=stage, stage_started_at=stage_started_at, ended_at=ended_at,
            resumed_at=resumed_at, cohorts=cohorts,
        )  # fmt: skip
    except Exception:
        logger.exception("the final analysis of stage %s could not be recorded", stage)


def stage_analysis_final_record(
    *, stage: str, stage_started_at: datetime, ended_at: datetime,
    resumed_at: datetime | None, cohorts: dict[str, int],
) -> StageAnalysis:  # fmt: skip
    """The final analysis of a stage run that ended at ``ended_at`` (from its start, or a
    later resume). Once per run: a repeat (a retried task) returns the one recorded."""
    existing = StageAnalysis.objects.filter(
        stage=stage, stage_started_at=stage_started_at, final=True
    ).first()
    if existing is not None:
        return existing
    window_start = stage_started_at
    if resumed_at is not None and window_start < resumed_at <= ended_at:
        window_start = resumed_at
    with transaction.atomic():
        return _analysis_save(
            stage=stage, stage_started_at=stage_started_at, window_start=window_start,
            window_end=ended_at, trigger=AnalysisTrigger.STAGE_END, final=True, cohorts=cohorts,
        )  # fmt: skip


def forced_promotion_request(*, stage: str, actor, reason: str) -> ForcedPromotionRequest:
    """ "Promote anyway": ask for ``stage`` above the one in force although its analysis
    does not pass. Nothing moves until a second staff account approves
    (``forced_promotion_decide``). Audited. Refused when the analysis passes (raise the
    stage directly), when lowering, or while a threshold is breached."""
    if stage not in STAGE_PERCENT:
        raise RolloutError(f"unknown stage {stage!r}: choose one of {', '.join(STAGE_PERCENT)}")
    reason = _reason_required(reason)
    if actor is None:
        raise RolloutError("a forced promotion is requested by a person")
    with transaction.atomic():
        state = _state_locked()
        if STAGE_PERCENT[stage] <= STAGE_PERCENT[state.stage]:
            raise RolloutError("only raising the stage needs a forced promotion")
        blocked = promotion_blocked_by(state=state)
        if blocked:
            raise RolloutError(f"promotion blocked: {'; '.join(blocked)}")
        refusal = promotion_analysis_refusal(state=state)
        if refusal is None:
            raise RolloutError("the analysis passes: raise the stage directly")
        request = ForcedPromotionRequest.objects.create(
            from_stage=state.stage, to_stage=stage, stage_started_at=state.stage_started_at,
            reason=reason, analysis=refusal.analysis, requested_by=actor,
        )  # fmt: skip
        audit_record(
            actor=actor, action=AuditAction.FORCE_REQUEST, from_value=state.stage,
            to_value=stage, reason=reason,
            figures={"request_id": request.pk, "refusal": str(refusal),
                     "analysis_id": refusal.analysis.pk if refusal.analysis else None},
        )  # fmt: skip
    return request


def forced_promotion_decide(
    *, request_id: int, actor, approve: bool, reason: str = ""
) -> ForcedPromotionRequest:
    """A second staff account approves (the stage is raised, audited as ``forced``) or
    rejects a pending request. The requester cannot decide their own request; the
    approver needs ``rollout.set_stage``. A request made during an earlier run of the
    stage (the stage changed since) is stale and changes nothing."""
    from rollout.permissions import SET_STAGE

    if actor is None or not (actor.is_active and actor.is_staff and actor.has_perm(SET_STAGE)):
        raise RolloutError(f"deciding a forced promotion needs a staff account with {SET_STAGE}")
    reason = (reason or "").strip() or ("approved" if approve else "rejected")
    with transaction.atomic():
        state = _state_locked()
        request = (
            ForcedPromotionRequest.objects.select_for_update()
            .select_related("requested_by")
            .filter(pk=request_id)
            .first()
        )
        if request is None:
            raise RolloutError(f"no forced promotion request #{request_id}")
        if request.status != ForceRequestStatus.PENDING:
            raise RolloutError(f"request #{request_id} is already {request.status}")
        if request.requested_by_id == actor.pk:
            raise RolloutError(
                "you cannot decide your own request: a second staff account must approve it"
            )
        if state.stage != request.from_stage or state.stage_started_at != request.stage_started_at:
            request.status = ForceRequestStatus.STALE
            request.save(update_fields=["status"])
            return request
        requester = request.requested_by.get_username()
        if approve:
            rollout_stage_set(
                stage=request.to_stage, actor=actor, force=True, approved_by=actor,
                reason=f"forced promotion requested by {requester} ({request.reason}), "
                f"approved by {actor.get_username()} ({reason})",
            )  # fmt: skip
        request.status = ForceRequestStatus.APPROVED if approve else ForceRequestStatus.REJECTED
        request.decided_by = actor
        request.decided_at = timezone.now()
        request.decision_reason = reason
        request.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
        audit_record(
            actor=actor, action=AuditAction.FORCE_DECISION, from_value=request.from_stage,
            to_value=request.to_stage, reason=f"{request.status}: {reason}",
            figures={"request_id": request.pk, "requested_by": requester,
                     "request_reason": request.reason, "approved": approve},
        )  # fmt: skip
    return request


def rollout_kill(
    *, actor, reason: str, figures: dict[str, Any] | None = None
) -> tuple[RolloutState, bool]:
    """Throw the kill switch: everyone to websocket until staff resume.

    Returns ``(state, changed)``; throwing it again while it is on changes nothing and
    sends nothing (idempotent), so a breach seen on every evaluation rolls back once.
    """
    reason = _reason_required(reason)
    with transaction.atomic():
        state = _state_locked()
        if state.killed:
            return state, False
        state.killed = True
        state.killed_at = timezone.now()
        state.kill_reason = reason
        state.dwell_started_at = None
        state.save(
            update_fields=["killed", "killed_at", "kill_reason", "dwell_started_at", "updated_at"]
        )
        audit_record(
            actor=actor, action=AuditAction.KILL, from_value=f"stage {state.stage}",
            to_value="killed", reason=reason, figures=figures,
        )  # fmt: skip
        _control_on_commit(switch_control())
    return state, True


def rollout_resume(*, actor, reason: str) -> tuple[RolloutState, bool]:
    """Release the kill switch: users return to the stage in force (a person's decision;
    the system never resumes by itself). The resume time is recorded: the rollback rules
    and the promotion gates then judge only samples taken after it."""
    reason = _reason_required(reason)
    with transaction.atomic():
        state = _state_locked()
        if not state.killed:
            return state, False
        now = timezone.now()
        state.killed = False
        state.kill_reason = ""
        # From now on the rules judge only samples taken after this moment (and wait for
        # their minimum counts again): the window that caused the rollback is not re-judged.
        state.resumed_at = now
        state.dwell_started_at = now if state.auto_promotion_enabled else None
        state.save(
            update_fields=["killed", "kill_reason", "resumed_at", "dwell_started_at", "updated_at"]
        )
        audit_record(
            actor=actor, action=AuditAction.RESUME, from_value="killed",
            to_value=f"stage {state.stage}", reason=reason,
        )  # fmt: skip
        _control_on_commit(transport_changed_control(state=state))
    return state, True


def rollout_promotion_configure(
    *, enabled: bool, dwell_seconds: int, actor, reason: str
) -> RolloutState:
    reason = _reason_required(reason)
    if dwell_seconds < 0:
        raise RolloutError("dwell must be zero or more seconds")
    with transaction.atomic():
        state = _state_locked()
        switch = "on" if state.auto_promotion_enabled else "off"
        before = f"{switch}/{state.promotion_dwell_seconds}s"
        state.auto_promotion_enabled = enabled
        state.promotion_dwell_seconds = dwell_seconds
        state.dwell_started_at = None
        state.save(
            update_fields=[
                "auto_promotion_enabled", "promotion_dwell_seconds", "dwell_started_at",
                "updated_at",
            ]
        )  # fmt: skip
        audit_record(
            actor=actor, action=AuditAction.PROMOTION, from_value=before,
            to_value=f"{'on' if enabled else 'off'}/{dwell_seconds}s", reason=reason,
        )  # fmt: skip
    return state


def user_transport_preference_set(*, user, choice: str, reason: str = "") -> TransportPreference:
    """A user's own transport choice (auto, supabase, websocket), audited."""
    if choice not in TransportChoice.values:
        raise RolloutError(
            f"unknown transport choice {choice!r}: "
            f"choose one of {', '.join(TransportChoice.values)}"
        )
    with transaction.atomic():
        preference, _ = TransportPreference.objects.select_for_update().get_or_create(user=user)
        previous = preference.choice
        if previous != choice:
            preference.choice = choice
            preference.save(update_fields=["choice", "updated_at"])
            audit_record(
                actor=user, action=AuditAction.PREFERENCE, from_value=previous, to_value=choice,
                reason=reason or "changed on the settings page", subject_user=user,
            )  # fmt: skip
            control = user_choice_control(choice=choice)
            transaction.on_commit(lambda: user_control_send(user_id=user.pk, control=control))
    return preference


def user_choice_control(*, choice: str) -> dict[str, Any]:
    """Told to one user's open pages when they change their own transport choice: the page
    re-reads its transport (GET /api/transport) and says the choice was theirs."""
    return {"action": "transport_changed", "cause": "user_choice", "choice": choice}


def user_control_send(*, user_id: int, control: dict[str, Any]) -> bool:
    """Send ``control`` to that user's open legacy feeds only; False when the channel layer
    could not be reached (the choice is saved regardless; a Supabase page reads it by its
    own poll of GET /api/transport)."""
    from events import sinks

    try:
        sinks.control_broadcast_legacy(control=control, user_id=user_id)
    except Exception:
        logger.exception("control message to user %s's legacy feeds failed", user_id)
        return False
    return True


# --- Health samples ----------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInput:
    transport: str
    kind: str
    value: float = 1.0
    weight: int = 1
    at: datetime | None = None


def health_samples_record(*, origin: str, samples: Iterable[SampleInput], reporter=None) -> int:
    """Store samples in one INSERT; returns how many rows were written. Browser samples
    name their ``reporter`` (the signed-in user), whose share the weighting bounds."""
    if origin not in SampleOrigin.values:
        raise ValueError(f"unknown origin {origin!r}")
    if (origin == SampleOrigin.BROWSER) != (reporter is not None):
        raise ValueError("browser samples, and only they, name their reporter")
    now = timezone.now()
    rows = []
    for sample in samples:
        if sample.transport not in Transport.values or sample.kind not in SampleKind.values:
            raise ValueError(f"bad sample {sample!r}")
        if sample.weight < 1:
            continue
        rows.append(
            HealthSample(
                transport=sample.transport,
                kind=sample.kind,
                value=float(sample.value),
                weight=sample.weight,
                at=sample.at or now,
                origin=origin,
                reporter_id=reporter.pk if reporter is not None else None,
            )
        )
    HealthSample.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def health_samples_prune(*, older_than: timedelta | None = None) -> int:
    """Delete samples past the retention (ROLLOUT_SAMPLE_RETENTION_HOURS), in chunks so
    that one run never holds a long lock."""
    older_than = older_than or timedelta(hours=rollout_setting("ROLLOUT_SAMPLE_RETENTION_HOURS"))
    cutoff = timezone.now() - older_than
    table = HealthSample._meta.db_table
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE at < %s ORDER BY at LIMIT 10000)",
                [cutoff],
            )
            deleted += cursor.rowcount
            if cursor.rowcount < 10000:
                return deleted


# --- Evaluation: rollback and promotion -----------------------------------------------------


@dataclass
class Evaluation:
    ran: bool  # False: another evaluation held the lock
    breaches: list[str] = field(default_factory=list)
    rolled_back: bool = False
    promotion_blocked: bool = False  # a breach blocked promotion (in shadow: only that)
    promoted_to: str | None = None
    analysis_refusal: str | None = None  # the dwell held but the analysis does not pass
    quota_refusal: str | None = None  # the next stage would exceed the Supabase plan
    figures: dict[str, Any] = field(default_factory=dict)


def _evaluation_lock(key: int = EVALUATION_LOCK_KEY) -> bool:
    """Take an advisory lock for this transaction, without waiting, and bound the
    transaction's statements so a stuck query cannot outlive the next run."""
    limit_ms = int(rollout_setting("ROLLOUT_EVALUATION_TIME_LIMIT_SECONDS") * 1000)
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(limit_ms)])
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        (locked,) = cursor.fetchone()
    return bool(locked)


SHADOW_BREACH_ALERT = "shadow_breach"
QUOTA_ALERT = "quota"


def rollout_health_evaluate(*, now: datetime | None = None) -> Evaluation:
    """Judge the Supabase path against the thresholds, on the samples taken since the last
    resume. On a breach:

    - in **shadow** (nobody is on Supabase by the rollout): raise a ``shadow_breach``
      alert (warning) and block promotion; the kill switch stays off;
    - at 10/50/100 %: throw the kill switch (once), audit it with the figures, raise a
      ``rollback`` alert and tell every open page to switch.

    Never runs twice at once (advisory lock; a run that finds it taken does nothing).
    """
    with transaction.atomic():
        if not _evaluation_lock():
            return Evaluation(ran=False)
        # The state is locked before judging, so a resume cannot slip in between the
        # reading of its time and the verdict on the samples before it.
        state = _state_locked()
        report = selectors.health_report(now=now, not_before=state.resumed_at)
        figures = report.figures()
        evaluation = Evaluation(
            ran=True, breaches=[b.message for b in report.breaches], figures=figures
        )
        if not report.breaches:
            return evaluation
        evaluation.promotion_blocked = True
        if state.dwell_started_at is not None:
            state.dwell_started_at = None  # a breach during the dwell restarts it
            state.save(update_fields=["dwell_started_at", "updated_at"])
        if state.stage == Stage.SHADOW:
            if not state.killed:
                alert_raise(
                    kind=SHADOW_BREACH_ALERT, severity=AlertSeverity.WARNING,
                    message="Shadow stage: promotion blocked, kill switch left off (nobody is "
                    "on Supabase by the rollout). Breached: " + "; ".join(evaluation.breaches),
                    figures=figures,
                )  # fmt: skip
            return evaluation
        reason = "automatic rollback: " + "; ".join(evaluation.breaches)
        _, evaluation.rolled_back = rollout_kill(actor=None, reason=reason, figures=figures)
        if evaluation.rolled_back:
            alert_raise(
                kind="rollback", severity=AlertSeverity.CRITICAL,
                message=f"Supabase Realtime rolled back to websocket (stage {state.stage}): "
                + "; ".join(evaluation.breaches),
                figures=figures,
            )  # fmt: skip
        return evaluation


_NEXT_STAGE = dict(zip(list(STAGE_PERCENT)[:-1], list(STAGE_PERCENT)[1:], strict=True))


def rollout_promotion_check(*, now: datetime | None = None) -> Evaluation:
    """Advance one stage when automatic promotion is on and the health gates have held
    (enough samples, no breach) for the dwell time; a breach resets the dwell."""
    now = now or timezone.now()
    with transaction.atomic():
        if not _evaluation_lock(PROMOTION_LOCK_KEY):
            return Evaluation(ran=False)
        state = _state_locked()
        if not state.auto_promotion_enabled or state.killed or state.stage == Stage.HUNDRED:
            return Evaluation(ran=True)
        report = selectors.health_report(now=now, not_before=state.resumed_at)
        evaluation = Evaluation(
            ran=True, breaches=[b.message for b in report.breaches], figures=report.figures(),
            promotion_blocked=bool(report.breaches),
        )  # fmt: skip
        if report.breaches or not report.gates_have_data:
            if state.dwell_started_at is not None:
                state.dwell_started_at = None
                state.save(update_fields=["dwell_started_at", "updated_at"])
            return evaluation
        if state.dwell_started_at is None:
            state.dwell_started_at = now
            state.save(update_fields=["dwell_started_at", "updated_at"])
            return evaluation
        held = (now - state.dwell_started_at).total_seconds()
        if held < state.promotion_dwell_seconds:
            return evaluation
        refusal = promotion_analysis_refusal(state=state)
        if refusal is not None:  # the dwell held, but the evidence does not (yet)
            evaluation.promotion_blocked = True
            evaluation.analysis_refusal = str(refusal)
            return evaluation
        target = _NEXT_STAGE[state.stage]
        over_quota = promotion_quota_refusal(stage=target, state=state)
        if over_quota is not None:  # healthy, but the next stage does not fit the plan
            evaluation.promotion_blocked = True
            evaluation.quota_refusal = str(over_quota)
            alert_raise(
                kind=QUOTA_ALERT, severity=AlertSeverity.WARNING,
                message=f"Automatic promotion to stage {target} held: {over_quota}",
                figures={"projection": over_quota.projection.as_dict()},
            )  # fmt: skip
            return evaluation
        rollout_stage_set(
            stage=target, actor=None,
            reason=f"automatic promotion: health gates held for {int(held)} s",
        )  # fmt: skip
        evaluation.promoted_to = target
        return evaluation


class TelemetryTransportMismatch(RolloutError):
    """A page reported for a transport its user is not on (refused: 409)."""

    def __init__(self, *, claimed: str, actual: str) -> None:
        super().__init__(
            f"you are on {actual}, not {claimed}: a report counts only for the transport "
            "the server puts you on (re-read GET /api/transport)"
        )
        self.claimed = claimed
        self.actual = actual


def telemetry_record(*, user, report) -> int:
    """Store a page's report (``rollout.telemetry.TelemetryReport``) as browser samples of
    ``user``, who must be on the reported transport right now (else
    ``TelemetryTransportMismatch``, and nothing is stored).

    Counters become one weighted row each; each latency is a row (the percentiles need
    the values) and together they count as that many successful deliveries. What the
    rows weigh in the rules is decided when they are read (``rollout.weighting``).
    """
    actual = selectors.transport_for_user_id(user.pk)
    if report.transport != actual:
        raise TelemetryTransportMismatch(claimed=report.transport, actual=actual)
    transport = report.transport
    samples = [
        SampleInput(transport, SampleKind.CONNECT, weight=report.connects),
        SampleInput(transport, SampleKind.CONNECT_FAILURE, weight=report.connect_failures),
        SampleInput(transport, SampleKind.ERROR, weight=report.errors),
        SampleInput(transport, SampleKind.DELIVERY, 1.0, weight=len(report.latencies_ms)),
        *(SampleInput(transport, SampleKind.LATENCY, value) for value in report.latencies_ms),
    ]
    stored = health_samples_record(origin=SampleOrigin.BROWSER, samples=samples, reporter=user)
    # Every report, even an empty one, says the page is open (the quota projections). Not
    # deferred to a commit: it describes the page, not the rows, and is true either way.
    open_page_seen(user_id=user.pk, transport=transport, page_id=report.page)
    return stored


# --- Prober ----------------------------------------------------------------------------------


def prober_user_get_or_create():
    """The prober's service user: no usable password, not staff, created on first use."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=rollout_setting("ROLLOUT_PROBER_USERNAME"),
        defaults={"is_staff": False, "is_superuser": False},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def session_backend_path() -> str:
    """The backend a session made outside ``login()`` names: the first configured one that
    can load a user (django-axes' backend, first in the list, only watches sign-ins)."""
    from django.conf import settings
    from django.contrib.auth import load_backend

    for path in settings.AUTHENTICATION_BACKENDS:
        if hasattr(load_backend(path), "get_user"):
            return path
    raise ImproperlyConfigured("no authentication backend can load a user (get_user)")


def prober_session_create(*, user_id: int) -> str:
    """A server-side session signed in as the prober user; returns its key.

    Built the way ``django.contrib.auth.login`` fills a session, so the Channels auth
    middleware accepts its cookie like any browser's.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )

    user = get_user_model().objects.get(pk=user_id)
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = session_backend_path()
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key
