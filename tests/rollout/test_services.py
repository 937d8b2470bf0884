"""Stage, kill switch, preferences, audit; the thresholds and the automatic rollback."""

from datetime import timedelta

import pytest
from django.utils import timezone

from rollout import services
from rollout.models import Alert, AuditEntry, Flag, RolloutState, Thresholds
from rollout.services import EVALUATION_LOCK_KEY, RolloutError
from tests.fixtures.database import other_connection
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = pytest.mark.django_db


def _state() -> RolloutState:
    return RolloutState.objects.get(id=1)


# --- Stage, kill, resume, preference ----------------------------------------------------------


def test_a_stage_change_moves_the_flag_and_is_audited(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="50", actor=staff_user, reason="half")
    assert _state().stage == "50"
    assert Flag.objects.get(name="supabase_realtime").percent == 50
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_label, entry.action) == (staff_user, "grace", "stage")
    assert (entry.from_value, entry.to_value, entry.reason) == ("shadow", "50", "half")
    assert "supabase" in entry.figures and "websocket" in entry.figures


@pytest.mark.parametrize(
    ("stage", "reason", "message"),
    [("75", "why", "unknown stage"), ("10", "  ", "reason is required")],
)
def test_a_bad_stage_change_is_refused_and_changes_nothing(staff_user, stage, reason, message):
    with pytest.raises(RolloutError, match=message):
        services.rollout_stage_set(stage=stage, actor=staff_user, reason=reason)
    assert _state().stage == "shadow"
    assert not AuditEntry.objects.exists()


def test_the_kill_switch_is_idempotent_and_resume_returns_to_the_stage(
    staff_user, django_capture_on_commit_callbacks
):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="start")
    with django_capture_on_commit_callbacks() as callbacks:
        state, changed = services.rollout_kill(actor=staff_user, reason="incident")
        assert changed and state.killed
        _, changed_again = services.rollout_kill(actor=staff_user, reason="again")
    assert not changed_again
    assert len(callbacks) == 1  # one control message, not two
    state, resumed = services.rollout_resume(actor=staff_user, reason="fixed")
    assert resumed and not state.killed and state.stage == "10"
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "stage", "kill", "resume",
    ]  # fmt: skip
    _, resumed_again = services.rollout_resume(actor=staff_user, reason="again")
    assert not resumed_again


def test_a_preference_change_is_audited_with_its_user(user):
    services.user_transport_preference_set(user=user, choice="websocket")
    services.user_transport_preference_set(user=user, choice="websocket")  # no change
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.subject_user, entry.action) == (user, user, "preference")
    assert (entry.from_value, entry.to_value) == ("auto", "websocket")
    assert "supabase" in entry.figures and "websocket" in entry.figures
    with pytest.raises(RolloutError):
        services.user_transport_preference_set(user=user, choice="carrier-pigeon")


# --- Thresholds: just under does nothing, just over rolls back ---------------------------------
# (at 10 %: in shadow a breach only alerts and blocks promotion, see test_rules.py)


def _assert_rolled_back(evaluation, rule: str) -> None:
    assert evaluation.rolled_back
    assert _state().killed
    entry = AuditEntry.objects.get(action="kill")
    assert entry.actor is None and entry.actor_label == "system"
    assert entry.reason.startswith("automatic rollback")
    assert [b["rule"] for b in entry.figures["breaches"]] == [rule]
    alert = Alert.objects.get(kind="rollback")
    assert alert.severity == "critical" and alert.figures["breaches"][0]["rule"] == rule


def _assert_not_rolled_back(evaluation) -> None:
    assert evaluation.ran and not evaluation.rolled_back and not evaluation.breaches
    assert not _state().killed
    assert not Alert.objects.exists()


@pytest.mark.usefixtures("first_cohort")
@pytest.mark.parametrize("lost", [5, 6])
def test_error_rate_just_under_and_just_over_five_percent(lost):
    # 100 operations: 5 lost is exactly 5 % (not over), 6 lost is over.
    samples_add(transport="supabase", kind="delivery", values=[1.0] * (100 - lost) + [0.0] * lost)
    evaluation = services.rollout_health_evaluate()
    if lost == 5:
        _assert_not_rolled_back(evaluation)
    else:
        _assert_rolled_back(evaluation, "error_rate")


@pytest.mark.usefixtures("first_cohort")
def test_error_rate_is_not_judged_below_the_minimum_sample_count():
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 19)
    _assert_not_rolled_back(services.rollout_health_evaluate())


@pytest.mark.usefixtures("first_cohort")
def test_errors_older_than_the_window_do_not_count():
    samples_add(
        transport="supabase", kind="delivery", values=[0.0] * 50,
        at=timezone.now() - timedelta(minutes=6),
    )  # fmt: skip
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 50)
    _assert_not_rolled_back(services.rollout_health_evaluate())


@pytest.mark.usefixtures("first_cohort")
@pytest.mark.parametrize("supabase_ms", [199.0, 201.0])
def test_latency_just_under_and_just_over_twice_the_legacy_p95(supabase_ms):
    samples_add(transport="websocket", kind="latency", values=[100.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[supabase_ms] * 30)
    evaluation = services.rollout_health_evaluate()
    if supabase_ms < 200:
        _assert_not_rolled_back(evaluation)
    else:
        _assert_rolled_back(evaluation, "latency")


@pytest.mark.usefixtures("first_cohort")
@pytest.mark.parametrize("supabase_ms", [99.0, 101.0])
def test_latency_uses_the_configured_baseline_without_legacy_samples(settings, supabase_ms):
    settings.ROLLOUT_BASELINE_P95_MS = 50.0
    samples_add(transport="websocket", kind="latency", values=[1.0] * 5)  # too few
    samples_add(transport="supabase", kind="latency", values=[supabase_ms] * 30)
    evaluation = services.rollout_health_evaluate()
    if supabase_ms < 100:
        _assert_not_rolled_back(evaluation)
    else:
        _assert_rolled_back(evaluation, "latency")


@pytest.mark.usefixtures("first_cohort")
@pytest.mark.parametrize("supabase_ms", [299.0, 301.0])
def test_a_latency_floor_keeps_a_fast_path_from_rolling_back(supabase_ms):
    Thresholds.objects.filter(id=1).update(latency_floor_ms=300.0)
    samples_add(transport="websocket", kind="latency", values=[50.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[supabase_ms] * 30)  # 6x
    evaluation = services.rollout_health_evaluate()
    if supabase_ms < 300:
        _assert_not_rolled_back(evaluation)
    else:
        _assert_rolled_back(evaluation, "latency")


@pytest.mark.usefixtures("first_cohort")
@pytest.mark.parametrize("failures", [2, 3])
def test_two_connection_failures_in_a_row_are_tolerated_three_roll_back(failures):
    samples_add(
        transport="supabase", kind="connect", count=1, at=timezone.now() - timedelta(seconds=60)
    )
    samples_add(transport="supabase", kind="connect_failure", count=failures)
    evaluation = services.rollout_health_evaluate()
    if failures == 2:
        _assert_not_rolled_back(evaluation)
    else:
        _assert_rolled_back(evaluation, "connect_failures")


@pytest.mark.usefixtures("first_cohort")
def test_thresholds_are_read_from_the_admin_editable_row():
    Thresholds.objects.filter(id=1).update(error_rate_max=0.5, error_rate_min_samples=5)
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 6 + [0.0] * 4)
    _assert_not_rolled_back(services.rollout_health_evaluate())


@pytest.mark.usefixtures("first_cohort")
def test_legacy_trouble_never_rolls_back():
    samples_add(transport="websocket", kind="delivery", values=[0.0] * 100)
    _assert_not_rolled_back(services.rollout_health_evaluate())


@pytest.mark.usefixtures("first_cohort")
def test_a_breach_seen_again_rolls_back_once(django_capture_on_commit_callbacks):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    with django_capture_on_commit_callbacks() as callbacks:
        first = services.rollout_health_evaluate()
        second = services.rollout_health_evaluate()
    assert first.rolled_back and not second.rolled_back and second.breaches
    assert AuditEntry.objects.filter(action="kill").count() == 1
    assert Alert.objects.get(kind="rollback").count == 1
    # one control message and one alert delivery
    assert len(callbacks) == 2


@pytest.mark.usefixtures("first_cohort")
def test_an_evaluation_never_runs_while_another_holds_the_lock():
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    with other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [EVALUATION_LOCK_KEY])
        evaluation = services.rollout_health_evaluate()
        other.execute("SELECT pg_advisory_unlock(%s)", [EVALUATION_LOCK_KEY])
    assert not evaluation.ran
    assert not _state().killed
    assert services.rollout_health_evaluate().rolled_back


# --- Promotion ----------------------------------------------------------------------------------


def _healthy_samples(at=None) -> None:
    at = at or timezone.now() - timedelta(seconds=1)
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 30, at=at)
    samples_add(transport="supabase", kind="latency", values=[20.0] * 30, at=at)
    samples_add(transport="websocket", kind="latency", values=[20.0] * 30, at=at)


def _check(now):
    """The prober keeps measuring: healthy samples just before each check."""
    _healthy_samples(at=now - timedelta(seconds=1))
    return services.rollout_promotion_check(now=now)


def test_promotion_is_off_by_default(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="start")
    now = timezone.now()
    _check(now)
    _check(now + timedelta(days=1))
    assert _state().stage == "10"


def test_promotion_advances_after_the_dwell_and_a_breach_resets_it(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="start")
    analysis_passing()  # and so does stage 10: only the health gates decide here
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=600, actor=staff_user, reason="autopilot"
    )
    t0 = timezone.now()
    assert _check(t0).promoted_to is None
    assert _state().dwell_started_at == t0
    assert _check(t0 + timedelta(seconds=599)).promoted_to is None

    # A breach during the dwell: the dwell starts again.
    samples_add(
        transport="supabase", kind="connect_failure", count=3, at=t0 + timedelta(seconds=599)
    )
    _check(t0 + timedelta(seconds=600))
    assert _state().dwell_started_at is None and _state().stage == "10"

    t1 = t0 + timedelta(seconds=1200)  # the failures have left the window
    _check(t1)
    assert _state().dwell_started_at == t1
    assert _check(t1 + timedelta(seconds=300)).promoted_to is None
    evaluation = _check(t1 + timedelta(seconds=601))
    assert evaluation.promoted_to == "50"
    assert _state().stage == "50"
    assert Flag.objects.get(name="supabase_realtime").percent == 50
    entry = AuditEntry.objects.filter(action="stage").latest("id")
    assert entry.actor_label == "system" and entry.reason.startswith("automatic promotion")


def test_promotion_needs_data_not_silence(staff_user):
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    now = timezone.now()
    services.rollout_promotion_check(now=now)
    services.rollout_promotion_check(now=now + timedelta(seconds=1))
    assert _state().stage == "shadow"


def test_pruning_deletes_only_old_samples():
    samples_add(
        transport="supabase", kind="delivery", count=5, at=timezone.now() - timedelta(days=3)
    )
    samples_add(transport="supabase", kind="delivery", count=2)
    assert services.health_samples_prune() == 5
    from rollout.models import HealthSample

    assert HealthSample.objects.count() == 2


# --- Shadow: a breach alerts and blocks promotion, and throws no kill switch --------------------


def _latency_breach() -> None:
    """What a healthy-but-busy dev stack showed: Supabase 3x slower than legacy."""
    samples_add(transport="websocket", kind="latency", values=[100.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[300.0] * 30)


def test_in_shadow_a_breach_raises_an_alert_and_blocks_promotion_without_a_kill_switch(
    django_capture_on_commit_callbacks,
):
    _latency_breach()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = services.rollout_health_evaluate()
        second = services.rollout_health_evaluate()
    assert first.breaches and first.promotion_blocked and not first.rolled_back
    assert second.promotion_blocked
    assert not _state().killed
    assert not AuditEntry.objects.filter(action="kill").exists()
    alert = Alert.objects.get()
    assert (alert.kind, alert.severity, alert.count) == ("shadow_breach", "warning", 2)
    assert alert.message.startswith("Shadow stage: promotion blocked, kill switch left off")
    assert "Breached: Supabase p95 300.0 ms" in alert.message
    assert len(callbacks) == 1  # the alert's delivery; no control message to any page


def test_in_shadow_a_breach_refuses_a_promotion_and_allows_nothing_but_lowering(staff_user):
    _latency_breach()
    with pytest.raises(RolloutError, match="promotion blocked: Supabase p95"):
        services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    assert _state().stage == "shadow"
    assert not AuditEntry.objects.exists()


def test_a_breach_blocks_raising_any_stage_but_never_lowering_it(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="50", actor=staff_user, reason="half")
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    with pytest.raises(RolloutError, match="promotion blocked"):
        services.rollout_stage_set(stage="100", actor=staff_user, reason="all")
    services.rollout_stage_set(stage="10", actor=staff_user, reason="back down")
    assert _state().stage == "10"


def test_in_shadow_automatic_promotion_waits_while_a_breach_lasts(staff_user):
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    _healthy_samples()
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 10)  # 10/40 lost
    now = timezone.now()
    first = services.rollout_promotion_check(now=now)
    services.rollout_promotion_check(now=now + timedelta(seconds=1))
    assert first.promotion_blocked and first.breaches
    assert _state().stage == "shadow" and _state().dwell_started_at is None


# --- After a resume only samples taken after it count ------------------------------------------


@pytest.mark.usefixtures("first_cohort")
def test_a_resume_is_not_undone_by_the_samples_that_caused_the_rollback(staff_user):
    # given: a breach that threw the kill switch, and staff resuming
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    assert services.rollout_health_evaluate().rolled_back
    state, _ = services.rollout_resume(actor=staff_user, reason="fixed")
    assert state.resumed_at is not None
    # when: the next evaluations judge again (the same samples are still in the window)
    evaluation = services.rollout_health_evaluate()
    # then: they are not judged again; the resume holds
    assert evaluation.ran and not evaluation.breaches and not evaluation.rolled_back
    assert not _state().killed
    assert evaluation.figures["judged_since"] == state.resumed_at.isoformat()


@pytest.mark.usefixtures("first_cohort")
def test_after_a_resume_the_rule_waits_for_its_minimum_sample_count_again(staff_user):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    services.rollout_health_evaluate()
    state, _ = services.rollout_resume(actor=staff_user, reason="fixed")
    after = state.resumed_at + timedelta(seconds=30)
    # 19 losses after the resume: below the 20 samples the error rate needs
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 19, at=after)
    assert not services.rollout_health_evaluate(now=after + timedelta(seconds=1)).breaches
    assert not _state().killed
    # the 20th: judged again, and still broken: thrown again
    samples_add(
        transport="supabase", kind="delivery", values=[0.0], at=after + timedelta(seconds=1)
    )
    evaluation = services.rollout_health_evaluate(now=after + timedelta(seconds=2))
    assert evaluation.rolled_back and _state().killed


@pytest.mark.usefixtures("first_cohort")
def test_after_a_resume_connection_failures_before_it_are_not_in_a_row(staff_user):
    samples_add(transport="supabase", kind="connect_failure", count=3)
    assert services.rollout_health_evaluate().rolled_back
    state, _ = services.rollout_resume(actor=staff_user, reason="fixed")
    samples_add(
        transport="supabase", kind="connect_failure", count=2,
        at=state.resumed_at + timedelta(seconds=5),
    )  # fmt: skip
    evaluation = services.rollout_health_evaluate(now=state.resumed_at + timedelta(seconds=6))
    assert not evaluation.breaches and not _state().killed


def test_after_a_resume_the_promotion_gates_need_new_data(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
    analysis_passing()  # and so does stage 10: only the health gates decide here
    services.rollout_kill(actor=staff_user, reason="drill")
    _healthy_samples()
    state, _ = services.rollout_resume(actor=staff_user, reason="drill over")
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    now = state.resumed_at + timedelta(seconds=1)
    assert not services.rollout_promotion_check(now=now).promoted_to
    assert not services.rollout_promotion_check(now=now + timedelta(seconds=1)).promoted_to
    assert _state().stage == "10"
    _healthy_samples(at=now + timedelta(seconds=2))
    services.rollout_promotion_check(now=now + timedelta(seconds=3))
    assert services.rollout_promotion_check(now=now + timedelta(seconds=4)).promoted_to == "50"


def test_a_stage_change_keeps_judging_the_samples_taken_before_it(staff_user):
    # A stage change is not a fix: the rules keep the window (only a resume restarts it).
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="50", actor=staff_user, reason="half")
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    services.rollout_stage_set(stage="10", actor=staff_user, reason="back to the first cohort")
    assert _state().resumed_at is None
    assert services.rollout_health_evaluate().rolled_back
