"""Raising the stage needs a passing analysis of the stage in force; otherwise "promote
anyway" needs a reason and a second staff account (panel) or ``--force --reason``
(command line). Lowering and the kill switch are never blocked."""

import io
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from rollout import services
from rollout.models import AuditEntry, ForcedPromotionRequest, RolloutState, StageAnalysis
from rollout.permissions import SET_STAGE
from rollout.services import PromotionNeedsAnalysis, RolloutError
from tests.rollout.factories import analysis_passing, permissions_grant, samples_add

pytestmark = pytest.mark.django_db

ACTION = "/admin/rollout/panel/action/"
PANEL = "/admin/rollout/panel/"


def _state() -> RolloutState:
    return RolloutState.objects.get(id=1)


def _analysis(verdict: str, reasons: list[str]) -> StageAnalysis:
    """An analysis of the stage in force with this verdict (how verdicts are reached is
    tests/rollout/test_analysis.py's business)."""
    state = _state()
    return StageAnalysis.objects.create(
        stage=state.stage, stage_started_at=state.stage_started_at,
        window_start=state.stage_started_at, window_end=timezone.now(), trigger="manual",
        verdict=verdict, reasons=reasons,
    )  # fmt: skip


# --- The service -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "said"),
    [
        (None, "none has been recorded"),
        ("fail", "is fail: prober: Supabase latencies are stochastically greater"),
        ("inconclusive", "is inconclusive: prober: too few latencies"),
    ],
)
def test_raising_the_stage_without_a_passing_analysis_is_refused_and_changes_nothing(
    staff_user, verdict, said
):
    if verdict == "fail":
        _analysis("fail", ["prober: Supabase latencies are stochastically greater than legacy's"])
    elif verdict == "inconclusive":
        _analysis("inconclusive", ["prober: too few latencies to compare (3 Supabase, 2 legacy)"])
    with pytest.raises(PromotionNeedsAnalysis, match=said):
        services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    assert _state().stage == "shadow"
    assert not AuditEntry.objects.exists()


def test_only_the_latest_analysis_of_the_current_run_counts(staff_user):
    analysis_passing()
    _analysis("fail", ["later and worse"])
    with pytest.raises(PromotionNeedsAnalysis, match="later and worse"):
        services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    analysis_passing()
    services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    # stage 10's own run has no analysis yet: the pass of shadow does not carry over
    with pytest.raises(PromotionNeedsAnalysis, match="analysis of stage 10"):
        services.rollout_stage_set(stage="50", actor=staff_user, reason="next")


def test_lowering_the_stage_and_the_kill_switch_are_never_blocked(staff_user):
    analysis_passing()
    services.rollout_stage_set(stage="50", actor=staff_user, reason="half")
    _analysis("fail", ["bad"])
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)  # and a breach
    services.rollout_kill(actor=staff_user, reason="incident")
    services.rollout_resume(actor=staff_user, reason="fixed")
    services.rollout_stage_set(stage="10", actor=staff_user, reason="back down")
    assert _state().stage == "10"


def test_a_forced_promotion_is_audited_as_forced_with_the_evidence_it_overrode(staff_user):
    analysis = _analysis("inconclusive", ["too few"])
    services.rollout_stage_set(stage="10", actor=staff_user, reason="launch day", force=True)
    assert _state().stage == "10"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.from_value, entry.to_value, entry.reason) == (
        "forced", "shadow", "10", "launch day",
    )  # fmt: skip
    assert entry.figures["forced_over"]["analysis_id"] == analysis.pk
    assert entry.figures["forced_over"]["verdict"] == "inconclusive"


def test_force_never_overrides_a_breach(staff_user):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    with pytest.raises(RolloutError, match="promotion blocked"):
        services.rollout_stage_set(stage="10", actor=staff_user, reason="x", force=True)
    assert _state().stage == "shadow"


def test_automatic_promotion_waits_for_a_passing_analysis(staff_user):
    analysis_passing()
    services.rollout_stage_set(stage="10", actor=staff_user, reason="start")
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[40.0] * 30)
    now = timezone.now()
    services.rollout_promotion_check(now=now)  # the dwell starts
    evaluation = services.rollout_promotion_check(now=now + timedelta(seconds=1))
    assert evaluation.promoted_to is None and evaluation.promotion_blocked
    assert "passing analysis of stage 10" in evaluation.analysis_refusal
    assert _state().stage == "10"
    analysis_passing()
    assert services.rollout_promotion_check(now=now + timedelta(seconds=2)).promoted_to == "50"


# --- The panel: "promote anyway" needs a second staff account -----------------------------------


@pytest.fixture
def ada(django_user_model):
    user = django_user_model.objects.create_user(username="ada", is_staff=True)
    return permissions_grant(user, SET_STAGE)


@pytest.fixture
def bob(django_user_model):
    user = django_user_model.objects.create_user(username="bob", is_staff=True)
    return permissions_grant(user, SET_STAGE)


def _as(client, user):
    client.force_login(user)
    return client


def test_the_panel_shows_why_a_promotion_is_refused_and_offers_promote_anyway(client, ada):
    _analysis("fail", ["prober: Supabase latencies are stochastically greater than legacy's"])
    _as(client, ada)
    body = client.get(PANEL).content.decode()
    assert 'data-testid="verdict">Fail<' in body and "stochastically greater" in body
    # asking for the stage: the refusal, and a request form instead of "Confirm"
    response = client.post(ACTION, {"action": "stage", "stage": "10", "reason": "go"})
    page = response.content.decode()
    assert 'data-testid="needs-force"' in page and "stochastically greater" in page
    assert 'name="confirm"' not in page and 'value="force_request"' in page
    # a hand-made confirmation changes nothing either
    client.post(ACTION, {"action": "stage", "stage": "10", "reason": "go", "confirm": "yes"})
    assert _state().stage == "shadow" and not AuditEntry.objects.exists()


def test_promote_anyway_needs_the_approval_of_a_second_staff_account(client, ada, bob):
    _analysis("inconclusive", ["too few latencies"])
    # ada asks
    _as(client, ada)
    client.post(ACTION, {"action": "force_request", "stage": "50", "reason": "deadline"})
    request = ForcedPromotionRequest.objects.get()
    assert (request.status, request.requested_by, request.to_stage) == ("pending", ada, "50")
    assert _state().stage == "shadow"
    assert "waiting for another staff account" in client.get(PANEL).content.decode()
    # ada cannot approve her own request, even by a hand-made POST
    response = client.post(
        ACTION,
        {"action": "force_approve", "request_id": request.pk, "reason": "me", "confirm": "yes"},
        follow=True,
    )
    assert "cannot decide your own request" in response.content.decode()
    assert _state().stage == "shadow"
    # bob sees the request with Approve and Reject, and approves: a confirmation
    # restating the effect, then the stage moves
    _as(client, bob)
    panel = client.get(PANEL).content.decode()
    assert f'data-testid="force-request-{request.pk}"' in panel
    assert 'value="force_approve">Approve…' in panel and 'value="force_reject">Reject' in panel
    confirm = client.post(
        ACTION, {"action": "force_approve", "request_id": request.pk, "reason": "agreed"}
    )
    assert "WITHOUT a passing analysis" in confirm.content.decode()
    assert _state().stage == "shadow"
    client.post(
        ACTION,
        {"action": "force_approve", "request_id": request.pk, "reason": "agreed", "confirm": "yes"},
    )
    assert _state().stage == "50"
    request.refresh_from_db()
    assert (request.status, request.decided_by) == ("approved", bob)
    entries = list(AuditEntry.objects.order_by("id").values_list("action", "actor_label"))
    assert entries == [("force_request", "ada"), ("forced", "bob"), ("force_decision", "bob")]
    forced = AuditEntry.objects.get(action="forced")
    assert "requested by ada (deadline)" in forced.reason and "approved by bob" in forced.reason
    assert forced.figures["forced_over"]["approved_by"] == "bob"


def test_a_second_account_without_the_permission_cannot_approve(client, ada, django_user_model):
    _analysis("fail", ["bad"])
    request = services.forced_promotion_request(stage="10", actor=ada, reason="please")
    carol = django_user_model.objects.create_user(username="carol", is_staff=True)
    _as(client, carol)
    response = client.post(
        ACTION,
        {"action": "force_approve", "request_id": request.pk, "reason": "ok", "confirm": "yes"},
    )
    assert response.status_code == 403
    with pytest.raises(RolloutError, match="needs a staff account with rollout.set_stage"):
        services.forced_promotion_decide(request_id=request.pk, actor=carol, approve=True)
    assert _state().stage == "shadow"


def test_a_request_can_be_rejected_and_goes_stale_when_the_stage_changes(staff_user, ada, bob):
    _analysis("fail", ["bad"])
    first = services.forced_promotion_request(stage="10", actor=ada, reason="one")
    second = services.forced_promotion_request(stage="50", actor=ada, reason="two")
    rejected = services.forced_promotion_decide(
        request_id=first.pk, actor=bob, approve=False, reason="not yet"
    )
    assert rejected.status == "rejected" and _state().stage == "shadow"
    analysis_passing()
    services.rollout_stage_set(stage="10", actor=staff_user, reason="the evidence came in")
    stale = services.forced_promotion_decide(request_id=second.pk, actor=bob, approve=True)
    assert stale.status == "stale" and _state().stage == "10"


def test_promote_anyway_is_refused_when_the_analysis_passes_or_when_lowering(ada):
    analysis_passing()
    with pytest.raises(RolloutError, match="raise the stage directly"):
        services.forced_promotion_request(stage="10", actor=ada, reason="x")
    with pytest.raises(RolloutError, match="only raising"):
        services.forced_promotion_request(stage="shadow", actor=ada, reason="x")
    assert not ForcedPromotionRequest.objects.exists()


# --- The command line: refused with a non-zero exit unless --force --reason --------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rollout", *args, stdout=out)
    return out.getvalue()


def test_the_command_refuses_a_promotion_without_a_passing_analysis_and_says_why():
    _analysis("inconclusive", ["prober: too few latencies to compare"])
    with pytest.raises(CommandError, match="is inconclusive: prober: too few") as refused:
        run("stage", "10")
    assert "--force --reason R" in str(refused.value)
    assert _state().stage == "shadow" and not AuditEntry.objects.exists()


def test_the_command_forces_a_promotion_with_a_reason_audited_as_forced(staff_user):
    _analysis("fail", ["bad"])
    with pytest.raises(CommandError, match="--force needs --reason"):
        run("stage", "10", "--force")
    assert "stage is now 10 (forced)" in run(
        "stage", "10", "--force", "--reason", "board decision", "--as", "grace"
    )
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor_label, entry.reason) == ("forced", "grace", "board decision")


def test_the_command_exits_non_zero_from_the_shell_without_evidence():
    from tests.fixtures.django_processes import process_environment

    # the child process sees the test database as migrated: no analysis of shadow yet
    result = subprocess.run(
        [sys.executable, "manage.py", "rollout", "stage", "10"],
        capture_output=True, text=True, timeout=120, env=process_environment(),
    )  # fmt: skip
    assert result.returncode != 0
    assert "promotion needs a passing analysis of stage shadow" in result.stderr


def test_analyse_records_an_analysis_now_and_status_shows_it():
    out = run("analyse")
    assert "recorded: stage shadow" in out and "INCONCLUSIVE" in out
    assert StageAnalysis.objects.get().trigger == "manual"
    assert "inconclusive (#" in run("status")
