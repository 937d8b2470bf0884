"""The staff rollout panel: every action confirmed, reasoned and audited; each change
needs its permission (staff alone may look); 403 for everyone else."""

import pytest
from django.urls import reverse

from rollout import services
from rollout.models import Alert, AuditEntry, RolloutState
from rollout.permissions import CHANGE_THRESHOLDS, OPERATE_KILL_SWITCH, SET_STAGE
from tests.rollout.factories import analysis_passing, permissions_grant, samples_add

pytestmark = pytest.mark.django_db

PANEL = "/admin/rollout/panel/"
ACTION = "/admin/rollout/panel/action/"
HEALTH = "/admin/rollout/panel/health.json"


@pytest.fixture
def operator(staff_user):
    """Staff holding the rollout's permissions (stage and kill switch)."""
    return permissions_grant(staff_user, SET_STAGE, OPERATE_KILL_SWITCH)


@pytest.fixture
def staff_client(client, operator):
    client.force_login(operator)
    return client


def _state() -> RolloutState:
    return RolloutState.objects.get(id=1)


def test_the_panel_urls_are_in_the_admin():
    assert reverse("admin:rollout_panel") == PANEL
    assert reverse("admin:rollout_panel_action") == ACTION
    assert reverse("admin:rollout_panel_health") == HEALTH


def test_the_panel_shows_state_cohorts_health_thresholds_alerts_and_audit(staff_client):
    samples_add(transport="supabase", kind="latency", values=[10.0, 20.0, 30.0])
    services.alert_raise(kind="breaker_opened", severity="warning", message="breaker open")
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=None, reason="seeded")
    response = staff_client.get(PANEL)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="stage">10<' in body
    assert "on websocket" in body and "on Supabase" in body
    assert "<svg" in body and "rollback above" in body  # the thresholds are drawn
    assert "breaker open" in body
    assert "seeded" in body
    assert "csrfmiddlewaretoken" in body


def test_the_health_endpoint_answers_json_with_the_rendered_section(staff_client):
    response = staff_client.get(HEALTH)
    assert response.status_code == 200
    data = response.json()
    assert "supabase" in data["figures"] and "<svg" in data["html"]


@pytest.mark.parametrize(
    ("data", "check"),
    [
        ({"action": "stage", "stage": "50"}, lambda s: s.stage == "50"),
        ({"action": "kill"}, lambda s: s.killed),
        ({"action": "promotion", "enabled": "on", "dwell_seconds": "120"},
         lambda s: s.auto_promotion_enabled and s.promotion_dwell_seconds == 120),
    ],
)  # fmt: skip
def test_an_action_needs_a_confirmation_then_is_done_and_audited(staff_client, data, check):
    analysis_passing()  # the stage in force passed its analysis
    # given a first post without confirmation: a confirmation page, nothing changed
    first = staff_client.post(ACTION, {**data, "reason": "planned"})
    assert first.status_code == 200
    assert b'name="confirm" value="yes"' in first.content
    assert not AuditEntry.objects.exists()
    # when confirmed
    second = staff_client.post(ACTION, {**data, "reason": "planned", "confirm": "yes"})
    # then it is done and audited with the staff member and the reason
    assert second.status_code == 302 and second.url == PANEL
    assert check(_state())
    entry = AuditEntry.objects.get()
    assert (entry.actor_label, entry.reason, entry.action) == ("grace", "planned", data["action"])


def test_resume_is_confirmed_and_audited(staff_client, staff_user):
    services.rollout_kill(actor=staff_user, reason="incident")
    staff_client.post(ACTION, {"action": "resume", "reason": "fixed", "confirm": "yes"})
    assert not _state().killed
    assert AuditEntry.objects.latest("id").action == "resume"


@pytest.mark.parametrize(
    "data",
    [
        {"action": "kill", "reason": "", "confirm": "yes"},
        {"action": "stage", "stage": "75", "reason": "x", "confirm": "yes"},
        {"action": "promotion", "dwell_seconds": "-1", "reason": "x", "confirm": "yes"},
    ],
)
def test_a_missing_reason_or_bad_value_is_refused_even_when_confirmed(staff_client, data):
    response = staff_client.post(ACTION, data)
    assert response.status_code == 400
    assert not _state().killed and _state().stage == "shadow"
    assert not AuditEntry.objects.exists()


def test_an_alert_is_acknowledged_and_audited(staff_client, staff_user):
    alert = services.alert_raise(kind="rollback", severity="critical", message="m")
    response = staff_client.post(f"/admin/rollout/panel/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == staff_user and alert.acknowledged_at is not None
    assert AuditEntry.objects.get().action == "alert_ack"


@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_non_staff_get_403_on_every_panel_url(client, user, who):
    if who == "user":
        client.force_login(user)
    alert = services.alert_raise(kind="rollback", severity="critical", message="m")
    assert client.get(PANEL).status_code == 403
    assert client.get(HEALTH).status_code == 403
    for data in (
        {"action": "kill", "reason": "r", "confirm": "yes"},
        {"action": "stage", "stage": "100", "reason": "r", "confirm": "yes"},
        {"action": "resume", "reason": "r", "confirm": "yes"},
    ):
        assert client.post(ACTION, data).status_code == 403
    assert client.post(f"/admin/rollout/panel/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert not _state().killed and _state().stage == "shadow"
    assert not AuditEntry.objects.exists()
    assert Alert.objects.get().acknowledged_at is None


def test_panel_forms_are_csrf_protected(operator):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    response = strict.post(ACTION, {"action": "kill", "reason": "r", "confirm": "yes"})
    assert response.status_code == 403
    assert not _state().killed


def test_the_rollout_flag_percent_is_read_only_in_the_admin(staff_client, staff_user):
    from rollout.models import Flag

    staff_user.is_superuser = True
    staff_user.save()
    flag = Flag.objects.get(name="supabase_realtime")
    response = staff_client.get(f"/admin/rollout/flag/{flag.pk}/change/")
    assert response.status_code == 200
    assert b'name="percent"' not in response.content


def test_the_state_changelist_leads_to_the_panel(staff_client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    response = staff_client.get("/admin/rollout/rolloutstate/")
    assert response.status_code == 302 and response.url == PANEL


# --- permissions ---------------------------------------------------------------------------

CHANGES = {
    "stage": {"action": "stage", "stage": "50", "reason": "r"},
    "promotion": {"action": "promotion", "enabled": "on", "dwell_seconds": "60", "reason": "r"},
    "kill": {"action": "kill", "reason": "r"},
    "resume": {"action": "resume", "reason": "r"},
}
BUTTONS = {"stage": "Set stage…", "promotion": "Save…", "kill": "Kill switch…",
           "resume": "Resume…"}  # fmt: skip


def _unchanged() -> bool:
    state = _state()
    return (state.stage, state.killed, state.auto_promotion_enabled) == ("shadow", False, False)


def _button_disabled(body: str, label: str) -> bool:
    start = body.index(label)
    return "disabled" in body[body.rindex("<button", 0, start) : start]


@pytest.mark.parametrize("action", list(CHANGES))
@pytest.mark.parametrize("confirm", [False, True])
def test_staff_without_the_permission_are_refused_403_and_nothing_changes(
    client, staff_user, action, confirm
):
    # given the kill switch thrown, so "resume" is a real change too
    if action == "resume":
        services.rollout_kill(actor=None, reason="incident")
    client.force_login(staff_user)
    data = {**CHANGES[action], **({"confirm": "yes"} if confirm else {})}

    response = client.post(ACTION, data)

    assert response.status_code == 403
    assert "rollout." in response.content.decode()  # names the permission it needs
    assert _state().stage == "shadow" and not _state().auto_promotion_enabled
    assert _state().killed is (action == "resume")
    assert AuditEntry.objects.exclude(action="kill", actor=None).count() == 0


def test_staff_without_permissions_see_the_panel_with_every_change_disabled_and_why(
    client, staff_user
):
    client.force_login(staff_user)
    body = client.get(PANEL).content.decode()
    for action in ("stage", "promotion", "kill"):
        assert _button_disabled(body, BUTTONS[action]), action
        assert f'data-testid="refused-{action}"' in body
    assert "rollout.set_stage" in body and "rollout.operate_kill_switch" in body
    assert "rollout/thresholds/1/change/" not in body  # no edit link without the permission
    assert "needs rollout.change_thresholds" in body


@pytest.mark.parametrize(
    ("permission", "allowed"),
    [(SET_STAGE, {"stage", "promotion"}), (OPERATE_KILL_SWITCH, {"kill", "resume"})],
)
def test_each_permission_opens_its_own_changes_only(client, staff_user, permission, allowed):
    client.force_login(permissions_grant(staff_user, permission))
    body = client.get(PANEL).content.decode()
    for action in ("stage", "promotion", "kill"):
        assert _button_disabled(body, BUTTONS[action]) is (action not in allowed), action
    for action, data in CHANGES.items():
        status = client.post(ACTION, data).status_code  # the confirmation step
        assert status == (200 if action in allowed else 403), action


def test_a_permitted_staff_member_changes_the_stage_and_throws_the_kill_switch(staff_client):
    analysis_passing()  # the stage in force passed its analysis
    body = staff_client.get(PANEL).content.decode()
    assert 'class="refused"' not in body.split('id="rollout-health"')[0]
    staff_client.post(ACTION, {**CHANGES["stage"], "confirm": "yes"})
    staff_client.post(ACTION, {**CHANGES["kill"], "confirm": "yes"})
    assert _state().stage == "50" and _state().killed
    assert [e.action for e in AuditEntry.objects.order_by("id")] == ["stage", "kill"]


def test_a_superuser_holds_every_rollout_permission(client, django_user_model):
    root = django_user_model.objects.create_superuser(username="root", password="pw-x-123")
    client.force_login(root)
    body = client.get(PANEL).content.decode()
    assert 'data-testid="refused-' not in body
    assert "/admin/rollout/thresholds/1/change/" in body
    response = client.post(ACTION, {**CHANGES["kill"], "confirm": "yes"})
    assert response.status_code == 302 and _state().killed


def test_thresholds_edit_leads_to_the_change_form_for_those_allowed(client, staff_user):
    client.force_login(staff_user)
    assert client.get("/admin/rollout/thresholds/1/change/").status_code == 403

    client.force_login(permissions_grant(staff_user, CHANGE_THRESHOLDS))
    body = client.get(PANEL).content.decode()
    assert 'href="/admin/rollout/thresholds/1/change/">edit</a>' in body
    form = client.get("/admin/rollout/thresholds/1/change/")
    assert form.status_code == 200 and b'name="error_rate_max"' in form.content


def test_the_health_section_polled_by_the_panel_keeps_the_edit_link(client, django_user_model):
    root = django_user_model.objects.create_superuser(username="root", password="pw-x-123")
    client.force_login(root)
    assert "/admin/rollout/thresholds/1/change/" in client.get(HEALTH).json()["html"]


# --- promotion blocked, resume window -------------------------------------------------------


def test_in_shadow_the_panel_says_a_breach_blocks_promotion_and_keeps_the_kill_switch_off(
    staff_client,
):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="promotion-blocked"' in body
    assert "Promotion blocked" in body and "the kill switch stays off" in body
    assert "shadow_breach" in body
    assert 'data-testid="killed">off<' in body
    html = staff_client.get(HEALTH).json()["html"]
    assert "Promotion blocked" in html


def test_the_panel_says_what_is_judged_since_a_resume(staff_client, staff_user):
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="promotion-blocked"' not in body
    assert 'data-testid="judged-since"' not in body
    services.rollout_kill(actor=staff_user, reason="drill")
    services.rollout_resume(actor=staff_user, reason="drill over")
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="judged-since"' in body and "since the resume" in body


def test_a_confirmed_promotion_during_a_breach_is_refused_with_the_reason(staff_client):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    response = staff_client.post(
        ACTION, {"action": "stage", "stage": "10", "reason": "go", "confirm": "yes"}, follow=True
    )
    assert _state().stage == "shadow"
    assert "promotion blocked: supabase error rate" in response.content.decode().lower()
    assert not AuditEntry.objects.exists()
